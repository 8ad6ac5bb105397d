"""Evolution mechanics on a small random Llama family: resume, failures, budgets, spaces, outputs."""

import json
import logging
import threading

import numpy as np
import pytest
import torch

import darwin_core.candidates as candidates_module
from darwin_core.breed import BreedSettings
from darwin_core.errors import DarwinError, GenomeError
from darwin_core.evolve import FAILED_FITNESS, Evolution, EvolveSettings, GenomeCodec, ablate_trust, evolve
from darwin_core.genome import GENE_NAMES, Genome, LayerRatios
from darwin_core.lineage import format_tree, lineage

FAST_BREED = BreedSettings(run_health=False, eval_suites=())


@pytest.fixture(scope="module")
def choice_suite(tmp_path_factory):
    """A two-choice suite whose answers random models get right about half of the time."""
    path = tmp_path_factory.mktemp("suite") / "letters.jsonl"
    rng = np.random.default_rng(0)
    lines = []
    for split in ("search", "test"):
        for index in range(24):
            first, second = rng.choice(list("abcdefghij"), size=2, replace=False)
            lines.append(json.dumps({
                "id": f"{split}-{index}", "split": split, "skill": "letters", "kind": "choice",
                "prompt": f"{first}{second}=", "choices": [first, second], "answer": int(index % 2),
            }))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def settings(choice_suite, **overrides) -> EvolveSettings:
    values = {"population": 4, "generations": 3, "sigma": 0.3, "seed": 11, "suites": ((choice_suite, 1.0),)}
    values.update(overrides)
    return EvolveSettings(**values)


def run_search(llama_family, choice_suite, workdir, **overrides):
    evolution = Evolution(llama_family["a"], llama_family["b"], start=Genome(), settings=settings(choice_suite, **overrides),
                          breed_settings=FAST_BREED, workdir=workdir)
    return evolution, evolution.run()


def test_search_records_every_candidate(llama_family, choice_suite, tmp_path):
    evolution, result = run_search(llama_family, choice_suite, tmp_path / "run")
    assert len(result.candidates) == 12
    assert [row["generation"] for row in result.history] == [0, 1, 2]
    assert all(0.0 <= c.fitness <= 1.0 for c in result.candidates)
    assert result.best.fitness == max(c.fitness for c in result.candidates)
    record = json.loads((tmp_path / "run" / "evolution.json").read_text())
    assert len(record["candidates"]) == 12
    assert set(record["candidates"][0]["genome"]) == set(GENE_NAMES)


def test_resume_matches_uninterrupted(llama_family, choice_suite, tmp_path):
    _, full = run_search(llama_family, choice_suite, tmp_path / "full")

    # Stop after the first generation (4 candidates), then resume with the same settings.
    _, partial = run_search(llama_family, choice_suite, tmp_path / "resumed", candidate_budget=4)
    assert partial.stopped == "candidate budget"
    assert len(partial.history) == 1
    resumed = Evolution(llama_family["a"], llama_family["b"], start=Genome(), settings=settings(choice_suite),
                        breed_settings=FAST_BREED, workdir=tmp_path / "resumed")
    result = resumed.run(resume=True)

    assert [c.vector for c in result.candidates] == [c.vector for c in full.candidates]
    assert [c.fitness for c in result.candidates] == [c.fitness for c in full.candidates]
    assert result.best.genome == full.best.genome


def test_resume_rejects_other_settings(llama_family, choice_suite, tmp_path):
    run_search(llama_family, choice_suite, tmp_path / "run", generations=1)
    other = Evolution(llama_family["a"], llama_family["b"], settings=settings(choice_suite, sigma=0.1), breed_settings=FAST_BREED,
                      workdir=tmp_path / "run")
    with pytest.raises(DarwinError, match="written with other settings"):
        other.run(resume=True)


def test_failed_candidate_gets_worst_fitness(llama_family, choice_suite, tmp_path, monkeypatch, caplog):
    real_build, real_merge = candidates_module.build_plan, candidates_module.merge_tensor
    state = {"candidate": 0}

    def counting_build(*args, **kwargs):
        state["candidate"] += 1
        if state["candidate"] == 3:
            raise RuntimeError("simulated out of memory")
        return real_build(*args, **kwargs)

    def nan_merge(*args, **kwargs):
        value = real_merge(*args, **kwargs)
        return torch.full_like(value, float("nan")) if state["candidate"] == 6 else value

    monkeypatch.setattr(candidates_module, "build_plan", counting_build)
    monkeypatch.setattr(candidates_module, "merge_tensor", nan_merge)
    with caplog.at_level(logging.ERROR, logger="darwin_core.candidates"):
        _, result = run_search(llama_family, choice_suite, tmp_path / "run")
    failed = [c for c in result.candidates if c.error]
    assert [c.id for c in failed] == ["g0-c2", "g1-c1"]
    assert all(c.fitness == FAILED_FITNESS for c in failed)
    assert "simulated out of memory" in failed[0].error
    assert "NaN" in failed[1].error
    assert "candidate g0-c2 failed" in caplog.text
    assert len(result.history) == 3
    assert result.history[0]["failed"] == 1
    assert all(0.0 <= c.fitness <= 1.0 for c in result.candidates if not c.error)


def test_candidate_model_matches_streaming_child(llama_family, choice_suite, tmp_path):
    """The in-place candidate model holds exactly the tensors a streaming breed writes."""
    from safetensors.torch import load_file

    from darwin_core.breed import breed

    genome = Genome(density_b=0.6, merge_method_weight=0.3, global_ratio=0.4)
    evolution = Evolution(llama_family["a"], llama_family["b"], start=genome, settings=settings(choice_suite, generations=1),
                          breed_settings=FAST_BREED)
    evaluator = evolution.evaluator()
    evaluator.evaluate(evolution.codec.start_vector())
    child = breed(llama_family["a"], llama_family["b"], tmp_path / "child", genome=genome, settings=FAST_BREED, mri=evolution.mri)
    written = load_file(child.out / "model.safetensors")
    for name, tensor in written.items():
        assert torch.equal(evaluator.targets[name], tensor), name


def test_time_budget_stops(llama_family, choice_suite, tmp_path):
    _, result = run_search(llama_family, choice_suite, tmp_path / "run", time_budget=0.0, generations=5)
    assert result.stopped == "time budget"
    assert len(result.candidates) >= 1


def test_cancel_keeps_best(llama_family, choice_suite, tmp_path):
    evolution = Evolution(llama_family["a"], llama_family["b"], settings=settings(choice_suite), breed_settings=FAST_BREED, workdir=tmp_path / "run")
    cancel = threading.Event()

    def stop_after_first(row, batch):
        cancel.set()

    result = evolution.run(cancel=cancel, on_generation=stop_after_first)
    assert result.stopped == "cancelled"
    assert len(result.history) == 1
    assert result.best in result.candidates


def test_frozen_genes_keep_start(llama_family, choice_suite, tmp_path):
    start = Genome(density_a=0.9, mri_trust=0.2)
    evolution = Evolution(llama_family["a"], llama_family["b"], start=start,
                          settings=settings(choice_suite, frozen=("density_a", "mri_trust"), generations=1), breed_settings=FAST_BREED)
    result = evolution.run()
    assert all(c.genome["density_a"] == 0.9 and c.genome["mri_trust"] == 0.2 for c in result.candidates)
    assert evolution.codec.dimension == 12


def test_layers_space_codec():
    codec = GenomeCodec(Genome(), "layers", (), num_layers=3, start_layers=LayerRatios(attn=(0.5,) * 3, ffn=(0.5,) * 3))
    assert codec.dimension == 7
    genome, layers = codec.decode([0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.25])
    assert layers.attn == (0.1, 0.2, 0.3)
    assert layers.ffn == (0.7, 0.8, 0.9)
    assert genome.mri_trust == 0.25


def test_layers_space_search(llama_family, choice_suite, tmp_path):
    evolution, result = run_search(llama_family, choice_suite, tmp_path / "run", space="layers", generations=1)
    assert evolution.codec.dimension == 2 * 2 + 1
    assert result.layers is not None and result.layers.num_layers == 2


def test_too_few_free_genes():
    with pytest.raises(GenomeError, match="CMA-ES needs at least 2 free values"):
        GenomeCodec(Genome(), "genome", tuple(GENE_NAMES[1:]), num_layers=2, start_layers=None)


def test_evolve_writes_child_and_record(llama_family, choice_suite, tmp_path):
    result, child = evolve(
        llama_family["a"], llama_family["b"], tmp_path / "best", settings=settings(choice_suite, generations=2),
        breed_settings=BreedSettings(run_health=False),
    )
    assert (child.out / "darwin.json").is_file()
    record = json.loads((child.out / "evolution.json").read_text())
    assert len(record["history"]) == 2
    assert child.record["genome"] == result.genome.to_dict()
    suite = child.record["eval"]["suites"][0]
    assert suite["split"] == "test"
    assert [row["model"] for row in suite["results"]][-1] == "child"

    # Second generation: the child is a parent, bred with the base as the other parent.
    second, grandchild = evolve(
        child.out, llama_family["base"], tmp_path / "second", settings=settings(choice_suite, generations=1),
        breed_settings=BreedSettings(run_health=False),
    )
    assert grandchild.record["generation"] == 2
    nodes = lineage(grandchild.out)
    assert [node.generation for node in nodes][:2] == [2, 1]
    assert "generation 2" in format_tree(nodes)


def test_resume_replaces_stopped_child(llama_family, choice_suite, tmp_path):
    out = tmp_path / "best"
    breed_settings = BreedSettings(run_health=False, eval_suites=())
    stopped, _ = evolve(llama_family["a"], llama_family["b"], out, settings=settings(choice_suite, candidate_budget=4),
                        breed_settings=breed_settings)
    assert stopped.stopped == "candidate budget"
    # Resuming with the budget lifted finishes the run and replaces that child without --overwrite.
    resumed, child = evolve(llama_family["a"], llama_family["b"], out, settings=settings(choice_suite),
                            breed_settings=breed_settings, resume=True)
    full, _ = evolve(llama_family["a"], llama_family["b"], tmp_path / "full", settings=settings(choice_suite),
                     breed_settings=breed_settings)
    assert len(resumed.candidates) == 12
    assert resumed.genome == full.genome
    assert json.loads((child.out / "evolution.json").read_text())["stopped"] == full.stopped


def test_evolve_rejects_occupied_output(llama_family, choice_suite, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("the user's file")
    for resume in (False, True):
        with pytest.raises(DarwinError, match="already exists and is not empty"):
            evolve(llama_family["a"], llama_family["b"], out, settings=settings(choice_suite), resume=resume)
    assert not (tmp_path / "taken.evolution").exists()  # refused before the search started
    assert (out / "notes.txt").read_text() == "the user's file"


def test_ablation_stops_when_cancelled(llama_family, choice_suite, tmp_path):
    cancel = threading.Event()
    cancel.set()
    rows = ablate_trust(llama_family["a"], llama_family["b"], tmp_path / "ablation", settings=settings(choice_suite),
                        breed_settings=BreedSettings(run_health=False), cancel=cancel)
    assert rows == []
    assert not (tmp_path / "ablation" / "trust-fixed-at-0").exists()


def test_ablation_three_runs(llama_family, choice_suite, tmp_path):
    rows = ablate_trust(
        llama_family["a"], llama_family["b"], tmp_path / "ablation", settings=settings(choice_suite, generations=1),
        breed_settings=BreedSettings(run_health=False),
    )
    assert [row["run"] for row in rows] == ["trust fixed at 0", "trust learned", "trust fixed at 1"]
    assert rows[0]["mri_trust"] == 0.0
    assert rows[2]["mri_trust"] == 1.0
    assert all(row["test_mean"] is not None for row in rows)
    assert (tmp_path / "ablation" / "ablation.json").is_file()
