"""Evolve tab callbacks: run CMA-ES in a worker thread and stream each generation to the page."""

import logging
import queue
import threading
from dataclasses import replace

import gradio as gr
import pandas as pd

from darwin_core.genome import GENE_NAMES, Genome

from . import plots, tables
from .callbacks import (
    PROBE_FAMILY_NAMES,
    _child_outputs,
    _require_compatible,
    _session,
    family_weights_from_values,
    genome_from_values,
    user_errors,
)

logger = logging.getLogger(__name__)

CANCEL_REQUESTED = "Cancel requested: the search stops after the running candidate and breeds the best genome found so far."
STOP_REASONS = {
    "finished": "Search finished",
    "cancelled": "Search cancelled",
    "interrupted": "Search interrupted",
    "time budget": "Search stopped by the time budget",
    "candidate budget": "Search stopped by the candidate budget",
}


def _settings(population, generations, sigma, seed, space, frozen, suites, time_budget, candidate_budget, backend):
    from darwin_core.evolve import EvolveSettings

    if not suites:
        raise gr.Error("Choose at least one fitness suite.")
    return EvolveSettings(
        population=int(population),
        generations=int(generations),
        sigma=float(sigma),
        seed=int(seed),
        space=space,
        frozen=tuple(frozen or ()),
        suites=tuple((name, 1.0) for name in suites),
        time_budget=float(time_budget) if time_budget else None,
        candidate_budget=int(candidate_budget) if candidate_budget else None,
        backend=backend,
    )


def _require_idle(session) -> None:
    if session.evolving is not None:
        raise gr.Error(f"A {session.evolving} is already running in this session. Cancel it or wait for it to finish.")


def _best_table(genome) -> pd.DataFrame:
    return pd.DataFrame([{"gene": name, "value": round(getattr(genome, name), 4)} for name in GENE_NAMES])


@user_errors
def run_evolution(session, population, generations, sigma, seed, space, frozen, suites, time_budget, candidate_budget,
                  backend, resume, *values, progress=gr.Progress(track_tqdm=True)):
    """Generator: yields (session, status, fitness plot, best genome table, *gene slider values) per generation,
    then the bred best child's outputs."""
    from darwin_core.breed import BreedSettings
    from darwin_core.evolve import evolve, saved_run
    from darwin_core.mri import MriSettings

    session = _session(session)
    father, mother, base = _require_compatible(session)
    weights = family_weights_from_values(values[: len(PROBE_FAMILY_NAMES)])
    start = genome_from_values(values[len(PROBE_FAMILY_NAMES) :])
    settings = _settings(population, generations, sigma, seed, space, frozen, suites, time_budget, candidate_budget, backend)
    if resume:
        if session.last_evolution is None:
            raise gr.Error("Nothing to resume in this session yet: start a search with Evolve first.")
        out = session.last_evolution  # its .evolution/ folder contains the saved generations
        # Use the saved start genome and search settings, because the sliders show the best genome by
        # now. The budgets and the backend come from the page, so a resume can extend them.
        start, saved = saved_run(out)
        settings = replace(saved, time_budget=settings.time_budget, candidate_budget=settings.candidate_budget,
                           backend=settings.backend)
    else:
        session.children_bred += 1
        out = session.workdir / f"evolved-{session.children_bred}"
    _require_idle(session)
    breed_settings = BreedSettings(seed=settings.seed, mri=MriSettings(family_weights=weights),
                                   eval_suites=tuple(name for name, _ in settings.suites), mapper=session.mapper_settings)
    session.last_evolution = out
    session.cancel.clear()

    updates: queue.Queue = queue.Queue()
    outcome: dict = {}
    history: list[dict] = []

    def on_generation(row, batch):
        best = max(batch, key=lambda candidate: candidate.fitness)
        updates.put((row, best))

    def work():
        try:
            with session.job():
                outcome["result"] = evolve(
                    father, mother, out, base=base, start=start, settings=settings, breed_settings=breed_settings,
                    resume=bool(resume), cancel=session.cancel, on_generation=on_generation, quiet=False,
                )
        except BaseException as error:  # handed to the page below
            outcome["error"] = error
        finally:
            session.evolving = None
            updates.put(None)

    session.evolving = "search"
    worker = threading.Thread(target=work, name="darwin-evolve", daemon=True)
    worker.start()
    no_change = [gr.skip()] * len(GENE_NAMES)
    started = "Resuming the saved search..." if resume else "Scanning parents and loading tensors..."
    yield (session, started, "", None, None, *no_change, *[gr.skip()] * 6)
    cancel_announced = False
    while True:
        try:
            item = updates.get(timeout=0.25)
        except queue.Empty:
            if session.cancel.is_set() and not cancel_announced:
                # Reported in this event's own stream, so the message cannot arrive after the final status.
                cancel_announced = True
                yield (session, CANCEL_REQUESTED, gr.skip(), gr.skip(), gr.skip(), *no_change, *[gr.skip()] * 6)
            continue
        if item is None:
            break
        row, best = item
        history.append(row)
        genome = Genome(**best.genome)
        status = f"Generation {row['generation'] + 1} of {settings.generations}: best {row['best']:.3f}, mean {row['mean']:.3f}"
        yield (session, gr.skip() if cancel_announced else status, gr.skip(), plots.fitness_figure(history), _best_table(genome),
               *[getattr(genome, n) for n in GENE_NAMES], *[gr.skip()] * 6)
    worker.join()

    if "error" in outcome:
        error = outcome["error"]
        raise error
    result, child = outcome["result"]
    session.child, session.record, session.health = child.out, child.record, child.health
    session.models.pop("child", None)
    genome = result.genome
    ending = STOP_REASONS.get(result.stopped, f"Search stopped ({result.stopped})")
    status = (
        f"{ending} after {len(result.candidates)} candidates; best search fitness {result.best.fitness:.3f}. "
        f"The best child was bred and scored on the test split."
    )
    yield (session, status, "", plots.fitness_figure(result.history) if result.history else None, _best_table(genome),
           *[getattr(genome, n) for n in GENE_NAMES], *_child_outputs(session))


def cancel_evolution(session):
    """Ask the running search or ablation to stop. A search reports the request in its own status line."""
    if session is None or session.evolving is None:
        return "Nothing is running."
    session.cancel.set()
    logger.info("cancel requested for the running %s in %s", session.evolving, session.workdir.name)
    if session.evolving == "ablation":
        return "Cancel requested: the ablation stops its running search, breeds its best child, and skips the runs left."
    return ""


@user_errors
def run_ablation(session, population, generations, sigma, seed, suites, *values, progress=gr.Progress(track_tqdm=True)):
    """Trust ablation: the same budget with trust fixed at 0, learned, and fixed at 1."""
    from darwin_core.breed import BreedSettings
    from darwin_core.evolve import ablate_trust
    from darwin_core.mri import MriSettings

    session = _session(session)
    father, mother, base = _require_compatible(session)
    weights = family_weights_from_values(values[: len(PROBE_FAMILY_NAMES)])
    start = genome_from_values(values[len(PROBE_FAMILY_NAMES) :])
    settings = _settings(population, generations, sigma, seed, "genome", (), suites, None, None, "local")
    _require_idle(session)
    session.cancel.clear()
    session.evolving = "ablation"  # the Evolve tab's Cancel button stops the ablation too
    with session.job():
        session.children_bred += 1
        try:
            rows = ablate_trust(
                father, mother, session.workdir / f"ablation-{session.children_bred}", base=base, start=start, settings=settings,
                breed_settings=BreedSettings(seed=int(seed), mri=MriSettings(family_weights=weights), eval_suites=tuple(suites),
                                             mapper=session.mapper_settings),
                cancel=session.cancel,
            )
        finally:
            session.evolving = None
    return session, tables.ablation_table(rows)
