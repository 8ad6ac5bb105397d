"""Candidates of an evolution run: the genome codec, the evaluation context and the evaluator.

A candidate is a vector from CMA-ES. The codec turns it into a genome, plus per-layer ratios in
the extended space. The evaluator merges the candidate's child into one reusable model and scores
it on the search split. Everything here is picklable or rebuilt from picklable parts, so Ray workers can
score candidates as well.
"""

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .breed import BreedSettings, load_tensors
from .errors import GenomeError
from .evaluate import EncodedSuite, load_suite, score_model
from .genome import GENE_NAMES, Genome, LayerRatios, genome_ratio
from .harness import HarnessSuite, is_harness_suite
from .inventory import Component, build_inventory
from .merge import merge_tensor
from .merge_methods import PairGeometry
from .modeling import load_tokenizer, model_from_tensors
from .plan import build_plan

logger = logging.getLogger(__name__)

FAILED_FITNESS = -1.0  # below every real score (accuracies lie in [0, 1])


@dataclass
class Candidate:
    generation: int
    index: int
    vector: list[float]
    genome: dict
    layers: dict | None
    fitness: float
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    @property
    def id(self) -> str:
        return f"g{self.generation}-c{self.index}"


class GenomeCodec:
    """Maps between CMA-ES vectors and genomes for the chosen space.

    Layout of a vector, all values in [0, 1]:
    - space "genome": the free genes of `GENE_NAMES`, in that order (frozen genes are left out
      and keep their start values);
    - space "layers": (attention ratio per layer, FFN ratio per layer, mri_trust), shape (2L + 1,);
      the other genes keep their start values.
    """

    def __init__(self, start: Genome, space: str, frozen: tuple[str, ...], num_layers: int, start_layers: LayerRatios | None):
        self.start = start
        self.space = space
        self.num_layers = num_layers
        self.free = [gene for gene in GENE_NAMES if gene not in frozen]
        self.start_layers = start_layers
        if self.dimension < 2:
            raise GenomeError(f"CMA-ES needs at least 2 free values, got {self.dimension}; freeze fewer genes")

    @property
    def dimension(self) -> int:
        return 2 * self.num_layers + 1 if self.space == "layers" else len(self.free)

    def start_vector(self) -> np.ndarray:
        if self.space == "genome":
            return np.array([getattr(self.start, gene) for gene in self.free])
        layers = self.start_layers
        return np.array([*layers.attn, *layers.ffn, self.start.mri_trust])

    def decode(self, vector) -> tuple[Genome, LayerRatios | None]:
        values = np.clip(np.asarray(vector, dtype=np.float64), 0.0, 1.0)
        if self.space == "genome":
            return self.start.replace(**{gene: float(v) for gene, v in zip(self.free, values)}), None
        count = self.num_layers
        layers = LayerRatios(attn=tuple(float(v) for v in values[:count]), ffn=tuple(float(v) for v in values[count : 2 * count]))
        return self.start.replace(mri_trust=float(values[-1])), layers


def layers_from_genome(genome: Genome, inventory, num_layers: int, weights) -> LayerRatios:
    """Per-layer ratios equal to what the 14-gene genome gives each layer's attention and FFN."""
    attn, ffn = [genome.global_ratio] * num_layers, [genome.global_ratio] * num_layers
    for slot in inventory.values():
        if slot.layer is None:
            continue
        if slot.component is Component.ATTENTION:
            attn[slot.layer] = genome_ratio(genome, slot, weights)
        elif slot.component is Component.FFN:
            ffn[slot.layer] = genome_ratio(genome, slot, weights)
    return LayerRatios(attn=tuple(attn), ffn=tuple(ffn))


@dataclass
class EvaluationContext:
    """Everything needed to score candidates, built once per run and picklable, so a Ray
    worker can receive it through the object store: parent tensors, MRI ratios, the plan
    inputs, the tokenizer and the sampled search items."""

    config: dict
    tokenizer: object
    inventory: dict
    ratios: dict | None
    codec: GenomeCodec
    breed_settings: BreedSettings
    suites: list[tuple[str, float, list | None]]
    seed: int
    max_items: int | None
    father: dict
    mother: dict
    base: dict | None
    forced: dict = field(default_factory=dict)


def build_context(
    father, mother, base, mapping, codec: GenomeCodec, breed_settings: BreedSettings, mri,
    suites: tuple[tuple[str, float], ...], max_items: int | None, sample_seed: int,
) -> EvaluationContext:
    """Load everything candidates need; `max_items` search items per suite are sampled with `sample_seed`."""
    father_tensors = load_tensors(father)
    loaded = []
    for name, weight in suites:
        if is_harness_suite(name):
            loaded.append((name, weight, None))  # the worker builds the harness task itself
            continue
        items = load_suite(name, "search")
        if max_items is not None and len(items) > max_items:
            # A fixed sample for the whole run, so every candidate is scored on the same items.
            order = np.random.default_rng(sample_seed).permutation(len(items))[:max_items]
            items = [items[i] for i in sorted(order)]
        loaded.append((name, weight, items))
    return EvaluationContext(
        config=father.config,
        tokenizer=load_tokenizer(father.folder),
        inventory=build_inventory(father.checkpoint.tensors, father.config),
        ratios=mri.ratios(breed_settings.mri.family_weights or None) if mri is not None else None,
        codec=codec,
        breed_settings=breed_settings,
        suites=loaded,
        seed=breed_settings.seed,
        max_items=max_items,
        father=father_tensors,
        mother=mapping.aligned(load_tensors(mother), father_tensors, "mother"),
        base=mapping.aligned(load_tensors(base), father_tensors, "base") if base is not None else None,
        forced=dict(mapping.forced),
    )


class CandidateEvaluator:
    """The scorer of candidates: one reusable model built from the context.

    `evaluate` turns an exception into a candidate with the worst fitness. Each candidate's
    tensors are written into the model's own parameters, and a tensor whose plan entry did not
    change since the previous candidate is not recomputed (`written` remembers the entries).
    """

    def __init__(self, context: EvaluationContext):
        self.context = context
        self.model = model_from_tensors(context.config, context.father)
        self.targets = self.model.state_dict(keep_vars=False)  # share storage with the parameters
        self.geometry = {
            name: PairGeometry.of(tensor, context.mother[name])
            for name, tensor in context.father.items()
            if tensor.is_floating_point() and name not in context.forced
        }
        self.written: dict[str, tuple] = {}
        self.suites = [
            (name, weight, HarnessSuite(name, "search", max_items=context.max_items, seed=context.seed) if items is None else EncodedSuite(items, context.tokenizer))
            for name, weight, items in context.suites
        ]

    def evaluate(self, vector, generation: int = 0, index: int = 0) -> Candidate:
        context = self.context
        started = time.perf_counter()
        genome, layers = context.codec.decode(vector)
        candidate = Candidate(generation, index, [float(v) for v in vector], genome.to_dict(), layers.to_dict() if layers else None, FAILED_FITNESS)
        try:
            plan = build_plan(context.inventory, genome, context.breed_settings.plan, context.ratios, layers, forced=context.forced)
            self.apply(plan)
            total = weight_sum = 0.0
            for name, weight, suite in self.suites:
                if isinstance(suite, HarnessSuite):
                    score = suite.score(self.model, context.tokenizer)
                else:
                    score = score_model(self.model, context.tokenizer, suite)
                candidate.scores[name] = score.accuracy
                total += weight * score.accuracy
                weight_sum += weight
            candidate.fitness = total / weight_sum
        except Exception as error:  # a failed candidate is a result, not a crash
            candidate.error = f"{type(error).__name__}: {error}"
            candidate.fitness = FAILED_FITNESS
            logger.exception("candidate %s failed; it gets the worst fitness %s", candidate.id, FAILED_FITNESS)
        candidate.seconds = time.perf_counter() - started
        return candidate

    def apply(self, plan) -> None:
        """Write the plan's child tensors into the model; raises on NaN or Inf weights."""
        context = self.context
        for name, entry in plan.entries.items():
            key = (entry.action, entry.r_final, entry.density_a, entry.density_b, entry.method_weight)
            if self.written.get(name) == key:
                continue
            self.written.pop(name, None)  # forget it until the new value is in place
            value = merge_tensor(
                entry, context.father[name], context.mother[name], context.base[name] if context.base else None,
                plan.method, context.seed, context.breed_settings.plan, self.geometry.get(name),
            )
            if value is not context.father[name] and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise FloatingPointError(f"merged weights hold NaN or Inf, for example {name}")
            self.targets[name].copy_(value)
            self.written[name] = key
