"""End to end on the embedded tiny family: the CLI contracts, the method's invariants, and children
that beat both parents (default genome, and after evolution)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from darwin_core.breed import BreedSettings, breed
from darwin_core.cli import main
from darwin_core.genome import Genome

FAST = BreedSettings(run_health=False, eval_suites=())
RATIO_GENES = ["global_ratio", "attn_ratio", "ffn_ratio", "embed_ratio"] + [f"block_{i}_ratio" for i in range(6)]


def run_cli(capsys, *arguments) -> dict:
    code = main(list(arguments))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def child_accuracy(suite: dict, model: str) -> float:
    return next(row["accuracy"] for row in suite["results"] if row["model"] == model)


@pytest.fixture(scope="module")
def default_child(tmp_path_factory):
    """`darwin breed` of the two tiny children with the default genome."""
    out = tmp_path_factory.mktemp("tiny") / "child"
    code = main(["breed", "--father", "embedded:tiny-arith", "--mother", "embedded:tiny-reverse", "--out", str(out), "--json", "--quiet"])
    assert code == 0
    return out


def test_breed_json_contract(default_child, capsys):
    record = json.loads((default_child / "darwin.json").read_text())
    for key in ("genome", "parents", "generation", "seed", "settings", "plan", "health", "eval", "software"):
        assert key in record
    assert record["genome"] == Genome().to_dict()
    assert record["parents"]["father"]["ref"] == "embedded:tiny-arith"
    assert record["parents"]["father"]["files"][0]["sha256"]
    assert record["health"]["verdict"] in ("healthy", "warning")


def test_default_child_beats_both_parents(default_child):
    record = json.loads((default_child / "darwin.json").read_text())
    suite = record["eval"]["suites"][0]
    assert suite["suite"] == "tiny" and suite["split"] == "test"
    child = child_accuracy(suite, "child")
    father = child_accuracy(suite, "embedded:tiny-arith")
    mother = child_accuracy(suite, "embedded:tiny-reverse")
    print(f"tiny test split: child {child:.3f}, tiny-arith {father:.3f}, tiny-reverse {mother:.3f}")
    assert child > father
    assert child > mother
    for paired in suite["paired"]:
        assert paired["wins"] > paired["losses"]


def test_eval_json_contract(default_child, capsys):
    report = run_cli(capsys, "eval", "embedded:tiny-arith", "embedded:tiny-reverse", str(default_child), "--suite", "tiny", "--split", "test", "--json", "--quiet")
    assert report["suite"] == "tiny" and report["split"] == "test"
    assert [row["model"] for row in report["results"]] == ["embedded:tiny-arith", "embedded:tiny-reverse", str(default_child)]
    for row in report["results"]:
        assert set(row) >= {"model", "accuracy", "ci95", "n"}
        assert row["ci95"][0] <= row["accuracy"] <= row["ci95"][1]
        assert row["n"] == 200
    assert [paired["against"] for paired in report["paired"]] == ["embedded:tiny-arith", "embedded:tiny-reverse"]
    assert all(0.0 <= paired["p_value"] <= 1.0 for paired in report["paired"])


def test_breed_cli_summary(tmp_path, capsys):
    summary = run_cli(capsys, "breed", "--father", "embedded:tiny-arith", "--mother", "embedded:tiny-reverse", "--out", str(tmp_path / "c"),
                      "--no-eval", "--json", "--quiet")
    assert summary["out"] == str(tmp_path / "c")
    assert set(summary["plan"]) >= {"transplant_a", "transplant_b", "blended"}
    assert summary["health"]["verdict"] in ("healthy", "warning", "failed")


def logits(folder, text="12+34="):
    from darwin_core.modeling import load_model

    model, tokenizer = load_model(folder)
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_self_breed_reproduces_logits(tmp_path):
    from darwin_core.parents import resolve_parent

    genome = Genome(global_ratio=0.7, density_a=0.5, density_b=0.3, mri_trust=0.8, merge_method_weight=0.6)
    child = breed("embedded:tiny-arith", "embedded:tiny-arith", tmp_path / "self", genome=genome, settings=FAST).out
    assert_close(logits(child), logits(resolve_parent("embedded:tiny-arith").folder), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("value, parent", [(0.0, "tiny-arith"), (1.0, "tiny-reverse")], ids=["all-father", "all-mother"])
def test_extreme_genomes_reproduce_a_parent(tmp_path, value, parent):
    from darwin_core.parents import resolve_parent

    genome = Genome(**{gene: value for gene in RATIO_GENES}, mri_trust=0.0)
    child = breed("embedded:tiny-arith", "embedded:tiny-reverse", tmp_path / "child", genome=genome, settings=FAST).out
    expected = load_file(resolve_parent(f"embedded:{parent}").folder / "model.safetensors")
    produced = load_file(child / "model.safetensors")
    assert produced.keys() == expected.keys()
    assert all(torch.equal(produced[name], expected[name]) for name in expected)


def test_same_recipe_byte_identical(tmp_path):
    genome = Genome(density_a=0.6, density_b=0.6)
    settings = BreedSettings(seed=3, run_health=False, eval_suites=())
    first = breed("embedded:tiny-arith", "embedded:tiny-reverse", tmp_path / "a", base="embedded:tiny-base", genome=genome, settings=settings)
    second = breed("embedded:tiny-arith", "embedded:tiny-reverse", tmp_path / "b", base="embedded:tiny-base", genome=genome, settings=settings)
    assert (first.out / "model.safetensors").read_bytes() == (second.out / "model.safetensors").read_bytes()
    assert all(torch.isfinite(t).all() for t in load_file(first.out / "model.safetensors").values())


def test_evolve_default_settings_beat_both_parents(tmp_path, capsys):
    """The acceptance run: default population and generations on the tiny family."""
    summary = run_cli(capsys, "evolve", "--father", "embedded:tiny-arith", "--mother", "embedded:tiny-reverse",
                      "--out", str(tmp_path / "evolved"), "--json", "--quiet")
    assert summary["candidates"] == 80
    suite = summary["eval"]["suites"][0]
    assert suite["split"] == "test"
    child = child_accuracy(suite, "child")
    father = child_accuracy(suite, "embedded:tiny-arith")
    mother = child_accuracy(suite, "embedded:tiny-reverse")
    with capsys.disabled():
        print(f"\nevolved child on tiny test: {child:.3f} vs {father:.3f} and {mother:.3f}; paired {suite['paired']}")
    assert child > father and child > mother
    assert all("p_value" in paired for paired in suite["paired"])
    assert (tmp_path / "evolved" / "evolution.json").is_file()

    # A second generation: the evolved child crossed with a third model.
    second = run_cli(capsys, "evolve", "--father", str(tmp_path / "evolved"), "--mother", "embedded:tiny-base",
                     "--out", str(tmp_path / "second"), "--generations", "2", "--suite", "tiny", "--json", "--quiet")
    assert second["generation"] == 2
    tree = main(["lineage", str(tmp_path / "second")])
    assert tree == 0
    assert "generation 1" in capsys.readouterr().out
