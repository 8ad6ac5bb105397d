"""Streaming and in-memory breeding on small random Llama families: invariants, files, records."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from darwin_core.breed import (
    BreedCancelled,
    BreedSettings,
    breed,
    breed_tensors,
    load_tensors,
    make_plan,
    prepare,
    verify_child,
)
from darwin_core.errors import OutputError
from darwin_core.genome import Genome
from darwin_core.plan import PlanSettings

FAST = BreedSettings(run_health=False, eval_suites=())
RATIO_GENES = ["global_ratio", "attn_ratio", "ffn_ratio", "embed_ratio"] + [f"block_{i}_ratio" for i in range(6)]


def genome_with_ratios(value: float, **others) -> Genome:
    return Genome(**{gene: value for gene in RATIO_GENES}, **others)


def logits(folder, text="12+34=46"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def weights(folder) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


@pytest.mark.parametrize(
    "genome",
    [Genome(), genome_with_ratios(0.3, density_a=0.4, density_b=0.7, mri_trust=0.9, merge_method_weight=0.2), genome_with_ratios(0.9, merge_method_weight=1.0)],
    ids=["balanced", "dare-heavy", "slerp"],
)
def test_self_breed_reproduces_logits(llama_family, tmp_path, genome):
    child = breed(llama_family["a"], llama_family["a"], tmp_path / "child", genome=genome, settings=FAST).out
    assert_close(logits(child), logits(llama_family["a"]), atol=1e-5, rtol=1e-5)


def test_zero_ratios_reproduce_father(llama_family, tmp_path):
    genome = genome_with_ratios(0.0, mri_trust=0.0)
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", genome=genome, settings=FAST)
    father = weights(llama_family["a"])
    child = weights(result.out)
    assert child.keys() == father.keys()
    for name in father:
        assert torch.equal(child[name], father[name]), name
    assert result.record["plan"]["transplant_a"] == len(father)


def test_unit_ratios_reproduce_mother(llama_family, tmp_path):
    genome = genome_with_ratios(1.0, mri_trust=0.0)
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", genome=genome, settings=FAST)
    mother = weights(llama_family["b"])
    child = weights(result.out)
    for name in mother:
        assert torch.equal(child[name], mother[name]), name
    assert result.record["plan"]["transplant_b"] == len(mother)


def test_same_seed_byte_identical(llama_family, tmp_path):
    genome = Genome(density_a=0.5, density_b=0.5)
    settings = BreedSettings(seed=7, run_health=False, eval_suites=())
    first = breed(llama_family["a"], llama_family["b"], tmp_path / "one", base=llama_family["base"], genome=genome, settings=settings)
    second = breed(llama_family["a"], llama_family["b"], tmp_path / "two", base=llama_family["base"], genome=genome, settings=settings)
    assert (first.out / "model.safetensors").read_bytes() == (second.out / "model.safetensors").read_bytes()

    other_seed = BreedSettings(seed=8, run_health=False, eval_suites=())
    third = breed(llama_family["a"], llama_family["b"], tmp_path / "three", base=llama_family["base"], genome=genome, settings=other_seed)
    assert (first.out / "model.safetensors").read_bytes() != (third.out / "model.safetensors").read_bytes()


def test_child_finite_and_loadable(llama_family, tmp_path):
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=BreedSettings(eval_suites=()))
    assert torch.isfinite(logits(result.out)).all()
    assert result.health is not None
    assert result.health.nonfinite_tensors == []
    assert result.health.verdict in ("healthy", "warning")


def test_in_memory_matches_streaming(llama_family, tmp_path):
    genome = Genome(density_a=0.6, density_b=0.4, merge_method_weight=0.3)
    settings = BreedSettings(seed=3, run_health=False, eval_suites=())
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", base=llama_family["base"], genome=genome, settings=settings)

    father, mother, base, _ = prepare(llama_family["a"], llama_family["b"], llama_family["base"])
    plan = make_plan(father, genome, settings, None)
    # Same MRI ratios as the streaming breed used, read back from its plan.
    for name, entry in result.plan.entries.items():
        assert plan.entries[name].r_genome == entry.r_genome
    tensors = breed_tensors(result.plan, load_tensors(father), load_tensors(mother), load_tensors(base), seed=3)
    streamed = weights(result.out)
    for name, tensor in tensors.items():
        assert torch.equal(tensor, streamed[name]), name


@pytest.mark.parametrize("method", ["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"])
def test_fixed_recipe_methods(llama_family, tmp_path, method):
    settings = BreedSettings(seed=1, plan=PlanSettings(method=method, ratio=0.4, density=0.7), run_health=False, eval_suites=())
    result = breed(llama_family["a"], llama_family["b"], tmp_path / method, base=llama_family["base"], settings=settings)
    child = weights(result.out)
    father, mother = weights(llama_family["a"]), weights(llama_family["b"])
    name = "model.layers.0.mlp.up_proj.weight"
    if method == "linear":
        assert_close(child[name], 0.6 * father[name] + 0.4 * mother[name])
    assert all(torch.isfinite(t).all() for t in child.values())
    assert result.record["settings"]["plan"]["method"] == method


def test_sharded_child_loads(llama_family, tmp_path):
    settings = BreedSettings(max_shard_bytes=20_000, run_health=False, eval_suites=())
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=settings)
    index = json.loads((result.out / "model.safetensors.index.json").read_text())
    shard_files = sorted(set(index["weight_map"].values()))
    assert len(shard_files) > 1
    assert all((result.out / name).is_file() for name in shard_files)
    assert torch.isfinite(logits(result.out)).all()
    assert set(result.record["files"]) == set(shard_files) | {"model.safetensors.index.json"}


def test_sharded_parent_reads(make_model, tmp_path):
    father = make_model("father", seed=1, shards=3)
    mother = make_model("mother", seed=2, shards=2)
    result = breed(father, mother, tmp_path / "child", settings=FAST)
    assert len(weights(result.out)) == len(weights(father))


def test_bf16_parents_give_bf16_child(make_model, tmp_path):
    father = make_model("father", seed=1, dtype=torch.bfloat16)
    mother = make_model("mother", seed=2, dtype=torch.bfloat16)
    result = breed(father, mother, tmp_path / "child", genome=Genome(density_b=0.5), settings=FAST)
    assert all(t.dtype == torch.bfloat16 for t in weights(result.out).values())


def test_mixed_dtype_parents_take_father_dtype(make_model, tmp_path):
    father = make_model("father", seed=1, dtype=torch.float32)
    mother = make_model("mother", seed=2, dtype=torch.bfloat16)
    result = breed(father, mother, tmp_path / "child", settings=FAST)
    assert all(t.dtype == torch.float32 for t in weights(result.out).values())


def test_record_contents(llama_family, tmp_path):
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=BreedSettings(seed=5, eval_suites=()))
    record = json.loads((result.out / "darwin.json").read_text())
    for key in ("genome", "parents", "generation", "seed", "settings", "plan", "health", "eval", "software"):
        assert key in record, key
    assert set(record["genome"]) == set(Genome().to_dict())
    assert record["generation"] == 1
    assert record["seed"] == 5
    assert record["parents"]["father"]["files"][0]["sha256"]
    for key in ("transplant_a", "transplant_b", "blended"):
        assert key in record["plan"]
    assert record["health"]["verdict"] in ("healthy", "warning", "failed")
    card = (result.out / "README.md").read_text()
    assert card.startswith("---")
    assert "evolutionary-merge" in card
    assert "darwin breed --father" in card


def test_child_of_child_increments_generation(llama_family, tmp_path):
    first = breed(llama_family["a"], llama_family["b"], tmp_path / "gen1", settings=FAST)
    second = breed(first.out, llama_family["base"], tmp_path / "gen2", settings=FAST)
    assert second.record["generation"] == 2
    assert second.record["parents"]["father"]["generation"] == 1


def test_verify_detects_tampering(llama_family, tmp_path):
    child = breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=FAST).out
    assert verify_child(child) == []
    data = bytearray((child / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (child / "model.safetensors").write_bytes(bytes(data))
    problems = verify_child(child)
    assert len(problems) == 1
    assert "does not match its checksum" in problems[0]


def test_existing_output_rejected(llama_family, tmp_path):
    out = tmp_path / "child"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists and is not empty"):
        breed(llama_family["a"], llama_family["b"], out, settings=FAST)
    with pytest.raises(OutputError, match="did not write"):
        breed(llama_family["a"], llama_family["b"], out, settings=FAST, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_earlier_child(llama_family, tmp_path):
    out = tmp_path / "child"
    breed(llama_family["a"], llama_family["b"], out, settings=FAST)
    result = breed(llama_family["a"], llama_family["b"], out, genome=Genome(global_ratio=0.2), settings=FAST, overwrite=True)
    assert json.loads((out / "darwin.json").read_text())["genome"]["global_ratio"] == 0.2
    assert verify_child(result.out) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cancel_leaves_nothing(llama_family, tmp_path):
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BreedCancelled):
        breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=FAST, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_genome_vector_extremes_stay_finite(llama_family, tmp_path):
    genome = Genome.from_vector(np.array([1.0, 0.0] * 7))
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", base=llama_family["base"], genome=genome, settings=FAST)
    assert all(torch.isfinite(t).all() for t in weights(result.out).values())
