"""Evolution: CMA-ES over the genome, with the MRI trust gene searched alongside the others.

Each candidate genome becomes a merge plan, its child is merged in memory from parent tensors
loaded once, copied into one reusable model, and scored on the suites' `search` split. Nothing
is written to disk until the best child is bred for real. A failed candidate (exception, NaN
weights or logits) gets the worst fitness, `FAILED_FITNESS`, and the run goes on.

The run state is saved after every generation as `evolution.json`: every candidate's vector,
genome and scores. Resuming replays that history through a fresh optimiser with the same seed,
which reproduces the optimiser's state exactly (ask draws the same samples, tell receives the
same values), so a resumed run reaches the same result as an uninterrupted one.
"""

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, get_args

import numpy as np
import torch

from .breed import BreedSettings, load_tensors, prepare
from .errors import DarwinError, GenomeError
from .evaluate import EncodedSuite, load_suite, score_model
from .genome import GENE_NAMES, Genome, LayerRatios, genome_ratio
from .harness import HarnessSuite, is_harness_suite
from .inventory import Component, build_inventory
from .memory import estimate_peak_bytes, require_memory
from .merge import merge_tensor
from .merge_methods import PairGeometry
from .modeling import load_tokenizer, model_from_tensors
from .mri import scan
from .plan import build_plan

logger = logging.getLogger(__name__)

GenomeSpace = Literal["genome", "layers"]
GENOME_SPACES: tuple[str, ...] = get_args(GenomeSpace)
FAILED_FITNESS = -1.0  # below every real score (accuracies lie in [0, 1])
RECORD_NAME = "evolution.json"


@dataclass(frozen=True)
class EvolveSettings:
    """Search settings; `suites` maps suite names to fitness weights."""

    population: int = 8
    generations: int = 10
    sigma: float = 0.2
    seed: int = 0
    space: str = "genome"
    frozen: tuple[str, ...] = ()
    suites: tuple[tuple[str, float], ...] = (("tiny", 1.0),)
    max_items: int | None = None
    time_budget: float | None = None
    candidate_budget: int | None = None
    backend: str = "local"
    ray_address: str | None = None
    ray_workers: int = 2

    def __post_init__(self):
        if self.population < 4:
            # With fewer than 4 candidates CMA-ES keeps one parent and its rank-mu update divides by zero.
            raise DarwinError(f"population must be at least 4, got {self.population}")
        if self.generations < 1:
            raise DarwinError(f"generations must be at least 1, got {self.generations}")
        if not 0.0 < self.sigma <= 1.0:
            raise DarwinError(f"sigma must be in (0, 1], got {self.sigma}")
        if self.space not in GENOME_SPACES:
            raise DarwinError(f"space must be one of {', '.join(GENOME_SPACES)}, got {self.space!r}")
        unknown = [gene for gene in self.frozen if gene not in GENE_NAMES]
        if unknown:
            raise GenomeError(f"cannot freeze unknown gene(s) {', '.join(unknown)}; genes are {', '.join(GENE_NAMES)}")
        if not self.suites:
            raise DarwinError("evolution needs at least one fitness suite")
        for name, weight in self.suites:
            if not math.isfinite(weight) or weight < 0:
                raise DarwinError(f"suite weight for {name} must be a non-negative number, got {weight}")
        if sum(weight for _, weight in self.suites) <= 0:
            raise DarwinError("suite weights must not all be zero")
        if self.backend not in ("local", "ray"):
            raise DarwinError(f"backend must be local or ray, got {self.backend!r}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["frozen"] = list(self.frozen)
        data["suites"] = [list(pair) for pair in self.suites]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "EvolveSettings":
        data = dict(data)
        data["frozen"] = tuple(data.get("frozen", ()))
        data["suites"] = tuple((name, float(weight)) for name, weight in data.get("suites", ()))
        return cls(**data)


# Settings that only decide when or where a run goes on; a resume may change them.
_RUN_CONTROLS = ("time_budget", "candidate_budget", "backend", "ray_address", "ray_workers")


def _search_defining(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key not in _RUN_CONTROLS}


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


def build_context(father, mother, base, mapping, codec: GenomeCodec, breed_settings: BreedSettings, mri, settings: EvolveSettings) -> EvaluationContext:
    father_tensors = load_tensors(father)
    suites = []
    for name, weight in settings.suites:
        if is_harness_suite(name):
            suites.append((name, weight, None))  # the worker builds the harness task itself
            continue
        items = load_suite(name, "search")
        if settings.max_items is not None and len(items) > settings.max_items:
            # A fixed sample for the whole run, so every candidate sees the same items.
            order = np.random.default_rng(settings.seed).permutation(len(items))[: settings.max_items]
            items = [items[i] for i in sorted(order)]
        suites.append((name, weight, items))
    return EvaluationContext(
        config=father.config,
        tokenizer=load_tokenizer(father.folder),
        inventory=build_inventory(father.checkpoint.tensors, father.config),
        ratios=mri.ratios(breed_settings.mri.family_weights or None) if mri is not None else None,
        codec=codec,
        breed_settings=breed_settings,
        suites=suites,
        seed=breed_settings.seed,
        max_items=settings.max_items,
        father=father_tensors,
        mother=mapping.aligned(load_tensors(mother), father_tensors, "mother"),
        base=mapping.aligned(load_tensors(base), father_tensors, "base") if base is not None else None,
        forced=dict(mapping.forced),
    )


class CandidateEvaluator:
    """Scores candidates with one reusable model built from the context; `evaluate` never raises.

    Each candidate's tensors are written into the model's own parameters; a tensor whose plan
    entry did not change since the previous candidate is not recomputed.
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


@dataclass
class EvolutionResult:
    best: Candidate
    genome: Genome
    layers: LayerRatios | None
    candidates: list[Candidate]
    history: list[dict]
    stopped: str

    def to_dict(self) -> dict:
        return {
            "best": asdict(self.best),
            "history": self.history,
            "stopped": self.stopped,
            "candidates": [asdict(candidate) for candidate in self.candidates],
        }


class Evolution:
    """One CMA-ES run over a parent pair; `run()` can be cancelled and resumed."""

    def __init__(
        self,
        father,
        mother,
        base=None,
        *,
        start: Genome | None = None,
        settings: EvolveSettings = EvolveSettings(),
        breed_settings: BreedSettings = BreedSettings(),
        workdir: str | Path | None = None,
        quiet: bool = True,
    ):
        self.father, self.mother, self.base, self.mapping = prepare(father, mother, base, breed_settings.mapper)
        self.settings = settings
        self.breed_settings = breed_settings
        self.start = start or Genome()
        self.workdir = Path(workdir) if workdir else None
        self.quiet = quiet
        inventory = build_inventory(self.father.checkpoint.tensors, self.father.config)
        self.num_layers = max((slot.layer for slot in inventory.values() if slot.layer is not None), default=-1) + 1
        start_layers = layers_from_genome(self.start, inventory, self.num_layers, breed_settings.plan.genome_weights)
        self.codec = GenomeCodec(self.start, settings.space, settings.frozen, self.num_layers, start_layers)
        self.candidates: list[Candidate] = []
        self.history: list[dict] = []
        self._evaluator = None
        self._context = None
        self._started = time.perf_counter()
        self.mri = None

    # --- state on disk -------------------------------------------------------------------------

    @property
    def record_path(self) -> Path | None:
        return self.workdir / RECORD_NAME if self.workdir else None

    def state(self, stopped: str | None = None) -> dict:
        return {
            "father": self.father.ref,
            "mother": self.mother.ref,
            "base": self.base.ref if self.base else None,
            "start": self.start.to_dict(),
            "settings": self.settings.to_dict(),
            "seed": self.breed_settings.seed,
            "history": self.history,
            "candidates": [asdict(candidate) for candidate in self.candidates],
            "stopped": stopped,
        }

    def save(self, stopped: str | None = None) -> None:
        if self.record_path is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        temporary = self.record_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.state(stopped), indent=1))
        os.replace(temporary, self.record_path)

    def load_checkpoint(self) -> None:
        """Read the candidates of finished generations from `evolution.json` for a resume."""
        if self.record_path is None or not self.record_path.is_file():
            raise DarwinError(f"nothing to resume: {self.record_path or 'no work folder'} not found")
        data = json.loads(self.record_path.read_text())
        if _search_defining(data["settings"]) != _search_defining(self.settings.to_dict()) or data["start"] != self.start.to_dict():
            raise DarwinError(f"{self.record_path} was written with other settings or another start genome; resume with the same ones")
        if (data["father"], data["mother"]) != (self.father.ref, self.mother.ref):
            raise DarwinError(f"{self.record_path} belongs to {data['father']} x {data['mother']}, not to these parents")
        finished = {row["generation"] for row in data["history"]}
        self.candidates = [Candidate(**c) for c in data["candidates"] if c["generation"] in finished]
        self.history = [row for row in data["history"]]

    # --- the search ---------------------------------------------------------------------------

    def context(self) -> EvaluationContext:
        """Scan once (cached) and load everything candidates need."""
        if self._context is None:
            self.require_memory()
            if self.mri is None and self.breed_settings.plan.method == "darwin":
                self.mri = scan(self.father, self.mother, self.base, self.breed_settings.mri, quiet=self.quiet, mapping=self.mapping)
            self._context = build_context(
                self.father, self.mother, self.base, self.mapping, self.codec, self.breed_settings, self.mri, self.settings
            )
        return self._context

    def require_memory(self, available: int | None = None) -> None:
        """Refuse, before loading anything, a run whose parents and child model cannot fit in memory."""
        parents = [p for p in (self.father, self.mother, self.base) if p is not None]
        largest = max(info.numel for p in parents for info in p.checkpoint.tensors.values())
        father_float32 = 4 * self.father.checkpoint.parameter_count  # the candidate model runs in float32
        needed = estimate_peak_bytes("memory", [p.checkpoint.total_bytes for p in parents], largest, father_float32)
        require_memory(needed, f"evolving {self.father.ref} x {self.mother.ref} in memory", available)

    def evaluator(self) -> CandidateEvaluator:
        if self._evaluator is None:
            self._evaluator = CandidateEvaluator(self.context())
        return self._evaluator

    def _optimizer(self):
        from cmaes import CMA

        dimension = self.codec.dimension
        return CMA(
            mean=np.clip(self.codec.start_vector(), 0.0, 1.0),
            sigma=self.settings.sigma,
            bounds=np.array([[0.0, 1.0]] * dimension),
            seed=self.settings.seed,
            population_size=self.settings.population,
        )

    def run(
        self,
        *,
        resume: bool = False,
        cancel: threading.Event | None = None,
        on_generation: Callable[[dict, list[Candidate]], None] | None = None,
        evaluate_batch: Callable | None = None,
    ) -> EvolutionResult:
        """Search; returns the best candidate found, also when cancelled, interrupted or out of budget.

        `evaluate_batch(vectors, generation)` replaces the in-process evaluation of a generation
        (the Ray backend passes one); it must return candidates in the order of `vectors`.
        """
        if resume:
            self.load_checkpoint()
        optimizer = self._optimizer()
        replayed = self._replay(optimizer)
        started = time.perf_counter() - (self.history[-1]["elapsed"] if self.history else 0.0)
        self._started = started
        stopped = "finished"
        evaluate_batch = evaluate_batch or self._evaluate_locally

        try:
            for generation in range(replayed, self.settings.generations):
                if self._should_stop(cancel, started):
                    stopped = self._stop_reason(cancel, started)
                    break
                vectors = [optimizer.ask() for _ in range(optimizer.population_size)]
                batch = evaluate_batch(vectors, generation, cancel)
                if len(batch) < len(vectors):  # cancelled or out of budget inside the generation
                    self.candidates.extend(batch)
                    stopped = self._stop_reason(cancel, started) or "cancelled"
                    break
                optimizer.tell([(np.asarray(c.vector), -c.fitness) for c in batch])
                self.candidates.extend(batch)
                fitness = [c.fitness for c in batch]
                row = {
                    "generation": generation,
                    "best": max(fitness),
                    "mean": float(np.mean(fitness)),
                    "best_so_far": max(c.fitness for c in self.candidates),
                    "failed": sum(1 for c in batch if c.error),
                    "elapsed": time.perf_counter() - started,
                }
                self.history.append(row)
                self.save()
                logger.info(
                    "generation %d: best %.4f, mean %.4f, %d failed, %.1f s elapsed",
                    generation, row["best"], row["mean"], row["failed"], row["elapsed"],
                )
                if on_generation is not None:
                    on_generation(row, batch)
        except KeyboardInterrupt:
            stopped = "interrupted"
            logger.warning("evolution interrupted; keeping the best candidate so far")

        if not self.candidates:
            raise DarwinError("evolution stopped before any candidate was evaluated")
        self.save(stopped)
        best = max(self.candidates, key=lambda c: (c.fitness, -c.generation, -c.index))
        genome, layers = self.codec.decode(best.vector)
        return EvolutionResult(best=best, genome=genome, layers=layers, candidates=self.candidates, history=self.history, stopped=stopped)

    def _replay(self, optimizer) -> int:
        """Feed finished generations back into a fresh optimiser; returns how many were replayed."""
        generations = sorted({c.generation for c in self.candidates})
        for generation in generations:
            batch = sorted((c for c in self.candidates if c.generation == generation), key=lambda c: c.index)
            asked = [optimizer.ask() for _ in range(optimizer.population_size)]
            for vector, candidate in zip(asked, batch):
                if not np.allclose(vector, candidate.vector, atol=1e-9):
                    raise DarwinError(f"cannot resume: generation {generation} does not replay identically (different software or settings?)")
            optimizer.tell([(np.asarray(c.vector), -c.fitness) for c in batch])
        return len(generations)

    def _evaluate_locally(self, vectors, generation: int, cancel) -> list[Candidate]:
        evaluator = self.evaluator()
        batch = []
        for index, vector in enumerate(vectors):
            if self._should_stop(cancel, self._started, pending=len(batch)):
                break
            batch.append(evaluator.evaluate(vector, generation, index))
        return batch

    def _should_stop(self, cancel, started: float, pending: int = 0) -> bool:
        return self._stop_reason(cancel, started, pending) is not None

    def _stop_reason(self, cancel, started: float, pending: int = 0) -> str | None:
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if not self.candidates and pending == 0:
            return None  # budgets always allow one candidate, so every run has a best
        if self.settings.time_budget is not None and time.perf_counter() - started >= self.settings.time_budget:
            return "time budget"
        if self.settings.candidate_budget is not None and len(self.candidates) + pending >= self.settings.candidate_budget:
            return "candidate budget"
        return None


def evolve(
    father,
    mother,
    out: str | Path,
    *,
    base=None,
    start: Genome | None = None,
    settings: EvolveSettings = EvolveSettings(),
    breed_settings: BreedSettings = BreedSettings(),
    resume: bool = False,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
    on_generation=None,
    quiet: bool = True,
):
    """Search, then breed the best genome into `out` and score it on the `test` split.

    The search state lives in `<out>.evolution/` while the run goes on (so `resume` finds it);
    the child folder gets a copy of `evolution.json` with every candidate and the history.
    Returns (EvolutionResult, BreedResult).
    """
    from dataclasses import replace

    from .breed import breed, default_suites

    out = Path(out)
    workdir = out.parent / f"{out.name}.evolution"
    run = Evolution(father, mother, base, start=start, settings=settings, breed_settings=breed_settings, workdir=workdir, quiet=quiet)
    backend = None
    if settings.backend == "ray":
        from .ray_backend import RayBackend

        backend = RayBackend(run, address=settings.ray_address, workers=settings.ray_workers)
    try:
        result = run.run(resume=resume, cancel=cancel, on_generation=on_generation, evaluate_batch=backend.evaluate_batch if backend else None)
    finally:
        if backend is not None:
            backend.close()

    suites = breed_settings.eval_suites if breed_settings.eval_suites is not None else tuple(name for name, _ in settings.suites)
    final_settings = replace(breed_settings, eval_suites=suites or default_suites(run.father), eval_split="test")
    child = breed(
        run.father, run.mother, out, base=run.base, genome=result.genome, layers=result.layers,
        settings=final_settings, overwrite=overwrite, quiet=quiet, mri=run.mri,
    )
    (child.out / RECORD_NAME).write_text(json.dumps(run.state(result.stopped), indent=1))
    return result, child


def ablate_trust(
    father,
    mother,
    out_dir: str | Path,
    *,
    base=None,
    start: Genome | None = None,
    settings: EvolveSettings = EvolveSettings(),
    breed_settings: BreedSettings = BreedSettings(),
    quiet: bool = True,
) -> list[dict]:
    """Run the same search three times: trust fixed at 0, learned, fixed at 1; score each best child on `test`."""
    from dataclasses import replace

    out_dir = Path(out_dir)
    start = start or Genome()
    rows = []
    for label, trust, frozen in (("trust fixed at 0", 0.0, True), ("trust learned", start.mri_trust, False), ("trust fixed at 1", 1.0, True)):
        frozen_genes = tuple(sorted(set(settings.frozen) | {"mri_trust"})) if frozen else tuple(g for g in settings.frozen if g != "mri_trust")
        run_settings = replace(settings, frozen=frozen_genes)
        slug = label.replace(" ", "-")
        result, child = evolve(
            father, mother, out_dir / slug, base=base, start=start.replace(mri_trust=trust),
            settings=run_settings, breed_settings=breed_settings, quiet=quiet,
        )
        scores = {
            suite["suite"]: next(r["accuracy"] for r in suite["results"] if r["model"] == "child")
            for suite in (child.record.get("eval") or {}).get("suites", [])
        }
        rows.append({
            "run": label,
            "mri_trust": result.genome.mri_trust,
            "search_fitness": result.best.fitness,
            "test": scores,
            "test_mean": sum(scores.values()) / len(scores) if scores else None,
            "child": str(child.out),
        })
    (out_dir / "ablation.json").write_text(json.dumps(rows, indent=2))
    return rows
