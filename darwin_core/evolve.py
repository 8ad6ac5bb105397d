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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, get_args

import numpy as np

from .breed import BreedSettings, prepare
from .candidates import (
    FAILED_FITNESS,
    Candidate,
    CandidateEvaluator,
    EvaluationContext,
    GenomeCodec,
    build_context,
    layers_from_genome,
)
from .errors import DarwinError, GenomeError
from .genome import GENE_NAMES, Genome, LayerRatios
from .inventory import build_inventory
from .memory import estimate_peak_bytes, require_memory
from .mri import scan

logger = logging.getLogger(__name__)

__all__ = [
    "FAILED_FITNESS", "Candidate", "CandidateEvaluator", "EvaluationContext", "EvolutionResult", "Evolution",
    "EvolveSettings", "GenomeCodec", "ablate_trust", "evolve", "saved_run",
]

GenomeSpace = Literal["genome", "layers"]
GENOME_SPACES: tuple[str, ...] = get_args(GenomeSpace)
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
                self.father, self.mother, self.base, self.mapping, self.codec, self.breed_settings, self.mri,
                self.settings.suites, self.settings.max_items, self.settings.seed,
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
                    "generation %d of %d: best %.4f, mean %.4f, %d failed, %.1f s elapsed",
                    generation + 1, self.settings.generations, row["best"], row["mean"], row["failed"], row["elapsed"],
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


def saved_run(out: str | Path) -> tuple[Genome, EvolveSettings]:
    """Read the start genome and settings of the run saved for the output folder `out`.

    A resume must use them unchanged. The studio reads them here instead of from its sliders,
    which show the best genome once a search ends.
    """
    out = Path(out)
    path = out.parent / f"{out.name}.evolution" / RECORD_NAME
    if not path.is_file():
        raise DarwinError(f"nothing to resume: {path} not found")
    data = json.loads(path.read_text())
    return Genome.from_dict(data["start"], source=str(path)), EvolveSettings.from_dict(data["settings"])


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

    from .outputs import check_output

    out = Path(out)
    workdir = out.parent / f"{out.name}.evolution"
    # A resumed run may replace the child that an earlier, stopped attempt of it bred at `out`.
    overwrite = overwrite or (resume and (out / RECORD_NAME).is_file())
    check_output(out, 0, overwrite)  # checked before the search starts, and the breed checks the free space later
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
    cancel: threading.Event | None = None,
) -> list[dict]:
    """Run the same search three times (trust fixed at 0, learned, fixed at 1) and score each best child on `test`.

    Setting `cancel` stops the running search early (its best child is still bred and scored)
    and skips the runs that have not started.
    """
    from dataclasses import replace

    out_dir = Path(out_dir)
    start = start or Genome()
    rows = []
    for label, trust, frozen in (("trust fixed at 0", 0.0, True), ("trust learned", start.mri_trust, False), ("trust fixed at 1", 1.0, True)):
        if cancel is not None and cancel.is_set():
            logger.info("trust ablation cancelled before the run with %s", label)
            break
        frozen_genes = tuple(sorted(set(settings.frozen) | {"mri_trust"})) if frozen else tuple(g for g in settings.frozen if g != "mri_trust")
        run_settings = replace(settings, frozen=frozen_genes)
        slug = label.replace(" ", "-")
        result, child = evolve(
            father, mother, out_dir / slug, base=base, start=start.replace(mri_trust=trust),
            settings=run_settings, breed_settings=breed_settings, quiet=quiet, cancel=cancel,
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
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ablation.json").write_text(json.dumps(rows, indent=2))
    return rows
