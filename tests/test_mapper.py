"""Architecture Mapper on tiny models of many families: canonical slots, wrapped checkpoints,
family conventions, fused tensors, config pass-through and deterministic father-first resolution."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from darwin_core.breed import BreedSettings, breed, prepare
from darwin_core.mapper import MapperSettings, MatchError, canonical_parts, match_parents, resolve
from darwin_core.parents import resolve_parent
from darwin_core.plan import PlanSettings
from factories import perturbed_copy
from mapper_factories import (
    FAMILIES,
    gemma_as_llama,
    llama_as_phi3,
    load_weights,
    logits,
    rename_checkpoint,
    rescaled_copy,
    save_family_model,
)

# Fixed-recipe linear merges skip the MRI scan; torch.lerp is exact at ratio 0 and 1.
MOTHER_ONLY = BreedSettings(plan=PlanSettings(method="linear", ratio=1.0), run_health=False, eval_suites=())
HALF = BreedSettings(plan=PlanSettings(method="linear", ratio=0.5), run_health=False, eval_suites=())


def wrap_language_model(name: str) -> str:
    return name.replace("model.", "model.language_model.", 1) if name.startswith("model.") else name


def wrap_legacy(name: str) -> str:
    return f"language_model.{name}"


def assert_nothing_written(folder: Path) -> None:
    assert [path.name for path in folder.iterdir() if path.name.startswith((".child", "child"))] == []


# --- canonical slots ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        ("model.layers.3.self_attn.q_proj.weight", {"model_type": "llama"}, "attn.q.weight"),
        ("model.layers.3.feed_forward.gate_proj.weight", {"model_type": "bamba"}, "ffn.gate.weight"),
        ("model.layers.3.post_attention_layernorm.weight", {"model_type": "llama"}, "norm.pre_ffn.weight"),
        ("model.layers.3.post_attention_layernorm.weight", {"model_type": "gemma2"}, "norm.post_mixer.weight"),
        ("model.layers.3.pre_ff_layernorm.weight", {"model_type": "jamba"}, "norm.pre_ffn.weight"),
        ("model.layers.3.mamba.in_proj.weight", {"model_type": "bamba"}, "mixer.mamba.in_proj.weight"),
        ("model.layers.3.shared_mlp.output_linear.weight", {"model_type": "granitemoehybrid"}, "ffn.down.weight"),
        ("model.final_layernorm.weight", {"model_type": "falcon_h1"}, "norm.final.weight"),
        ("language_model.lm_head.weight", {"model_type": "gemma3"}, "lm_head.weight"),
        ("model.language_model.embed_tokens.weight", {"model_type": "gemma3"}, "embed.weight"),
    ],
    ids=["llama-q", "bamba-ffn", "llama-pre-ffn-norm", "gemma2-post-attention-norm", "jamba-pre-ffn-norm", "bamba-mixer",
         "granite-down", "falcon-final-norm", "legacy-wrapped-head", "wrapped-embedding"],
)
def test_canonical_slot(name, config, expected):
    (part,) = canonical_parts(name, (4, 4), config)
    assert part.key == expected


def test_fused_tensors_split_into_slots():
    config = {"model_type": "phi3", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2}
    qkv = canonical_parts("model.layers.0.self_attn.qkv_proj.weight", (64, 32), config)
    gate_up = canonical_parts("model.layers.0.mlp.gate_up_proj.weight", (128, 32), config)
    assert [(p.key, p.rows) for p in qkv] == [("attn.q.weight", (0, 32)), ("attn.k.weight", (32, 48)), ("attn.v.weight", (48, 64))]
    assert [(p.key, p.rows) for p in gate_up] == [("ffn.gate.weight", (0, 64)), ("ffn.up.weight", (64, 128))]


# --- wrapped checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [wrap_language_model, wrap_legacy], ids=["model.language_model", "language_model.model"])
def test_reprefixed_keys_match_fully(make_model, tmp_path, wrap):
    father = make_model("father", seed=1)
    mother = rename_checkpoint(perturbed_copy(father, tmp_path / "plain-mother", seed=2), tmp_path / "mother", wrap)

    report = match_parents(resolve_parent(str(father)), resolve_parent(str(mother)))
    assert report.match_fraction == 1.0
    assert report.renamed == sum(wrap(name) != name for name in load_weights(father))

    child = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY).out
    plain_mother = load_weights(tmp_path / "plain-mother")
    child_weights = load_weights(child)
    assert child_weights.keys() == plain_mother.keys()
    for name, tensor in child_weights.items():
        assert torch.equal(tensor, plain_mother[name]), name


def test_wrapped_father_matches_plain_mother(make_model, tmp_path):
    mother = make_model("mother", seed=2)
    father = rename_checkpoint(make_model("plain-father", seed=1), tmp_path / "father", wrap_language_model)
    report = match_parents(resolve_parent(str(father)), resolve_parent(str(mother)))
    assert report.match_fraction == 1.0


def test_unrelated_prefix_fails_with_names(make_model, tmp_path):
    father = make_model("father", seed=1)
    mother = rename_checkpoint(make_model("plain-mother", seed=2), tmp_path / "mother", lambda name: f"backbone.{name}")

    with pytest.raises(MatchError, match=r"only 0 of 21 father tensors .* no counterpart, for example lm_head.weight, "
                                         r"model.embed_tokens.weight.*unused mother tensors include backbone.lm_head.weight") as error:
        breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)
    report = error.value.report
    assert report.unmatched == 21
    assert "backbone.model.embed_tokens.weight" in report.mother_unused
    assert_nothing_written(tmp_path)


def test_wrapped_gemma3_checkpoint(tmp_path, char_tokenizer_dir, vocab_size):
    """A real multimodal checkpoint: its text tensors pair with a Gemma 3 text model, its vision tower stays out."""
    from transformers import AutoConfig, AutoModelForCausalLM

    text = {"model_type": "gemma3_text", "vocab_size": vocab_size, **{k: v for k, v in FAMILIES["gemma3_text"].items()}}
    text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    vision = {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    config = AutoConfig.for_model("gemma3", text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                  image_token_index=99, boi_token_index=97, eoi_token_index=98)
    torch.manual_seed(3)
    wrapped = tmp_path / "wrapped"
    AutoModelForCausalLM.from_config(config).save_pretrained(wrapped)
    father = save_family_model(tmp_path / "father", "gemma3_text", vocab_size, char_tokenizer_dir, seed=4)

    report = match_parents(resolve_parent(str(father)), resolve_parent(str(wrapped)))
    assert report.match_fraction == 1.0
    assert any("vision" in name for name in report.mother_unused)

    child = breed(father, str(wrapped), tmp_path / "child", settings=MOTHER_ONLY).out
    assert_close(logits(child), logits(wrapped), atol=1e-5, rtol=1e-5)


# --- every supported family -----------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_identity_merge_reproduces_logits(family, tmp_path, char_tokenizer_dir, vocab_size):
    """Each family bred with itself under wrapped names (so the mapper pairs every tensor) is unchanged."""
    father = save_family_model(tmp_path / "father", family, vocab_size, char_tokenizer_dir, seed=5)
    mother = rename_checkpoint(father, tmp_path / "mother", wrap_language_model)

    result = breed(father, mother, tmp_path / "child", settings=HALF)

    assert result.compatibility.match_fraction == 1.0
    assert result.compatibility.father_family == family
    assert_close(logits(result.out), logits(father), atol=1e-5, rtol=1e-5)


# --- family conventions -----------------------------------------------------------------------


def test_gemma_takes_llama_weights_functionally(tmp_path, char_tokenizer_dir, vocab_size):
    """A Gemma father that takes every tensor from a Llama mother computes the mother's function.

    The mother is another Gemma rewritten as an untied Llama, so this only holds when the mapper
    undoes the sqrt(hidden_size) embedding scale and the 1 + weight norm offset.
    """
    father = save_family_model(tmp_path / "gemma-father", "gemma", vocab_size, char_tokenizer_dir, seed=6)
    other_gemma = save_family_model(tmp_path / "gemma-other", "gemma", vocab_size, char_tokenizer_dir, seed=7)
    mother = gemma_as_llama(other_gemma, tmp_path / "llama-mother")
    assert_close(logits(mother), logits(other_gemma), atol=1e-5, rtol=1e-5)

    result = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)

    assert result.compatibility.match_fraction == 1.0
    assert result.compatibility.converted > 0
    assert "lm_head.weight" not in load_weights(result.out)
    assert json.loads((result.out / "config.json").read_text()) == json.loads((father / "config.json").read_text())
    assert_close(logits(result.out), logits(other_gemma), atol=1e-5, rtol=1e-5)


def test_llama_takes_gemma_weights_functionally(tmp_path, char_tokenizer_dir, vocab_size):
    """The reverse: a Llama father reads a tied Gemma mother's embedding for both its input and output layer."""
    father = gemma_as_llama(save_family_model(tmp_path / "gemma-a", "gemma", vocab_size, char_tokenizer_dir, seed=8), tmp_path / "llama")
    mother = save_family_model(tmp_path / "gemma-b", "gemma", vocab_size, char_tokenizer_dir, seed=9)

    child = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY).out

    assert_close(logits(child), logits(mother), atol=1e-5, rtol=1e-5)


# (family, config changes, divisors of the stored tensors that keep the function unchanged)
MULTIPLIER_CASES = {
    "granitemoehybrid": (
        {"embedding_multiplier": 4.0, "logits_scaling": 2.0, "residual_multiplier": 0.5},
        {"embed_tokens.weight": 4.0, "lm_head.weight": 0.5, "o_proj.weight": 0.5, "output_linear.weight": 0.5, "mamba.out_proj.weight": 0.5},
    ),
    "falcon_h1": (
        {"embedding_multiplier": 4.0, "lm_head_multiplier": 0.5, "mlp_multipliers": [2.0, 0.25], "attention_out_multiplier": 3.0},
        {"embed_tokens.weight": 4.0, "lm_head.weight": 0.5, "gate_proj.weight": 2.0, "down_proj.weight": 0.25, "o_proj.weight": 3.0},
    ),
}


@pytest.mark.parametrize("family", sorted(MULTIPLIER_CASES))
def test_multipliers_converted(family, tmp_path, char_tokenizer_dir, vocab_size):
    """A father with unit multipliers that takes every tensor from a mother with other multipliers
    computes the mother's function."""
    config_changes, divisors = MULTIPLIER_CASES[family]
    father = save_family_model(tmp_path / "father", family, vocab_size, char_tokenizer_dir, seed=20)
    donor = save_family_model(tmp_path / "donor", family, vocab_size, char_tokenizer_dir, seed=21)
    rescaled = rescaled_copy(donor, tmp_path / "rescaled", config_changes, divisors)
    assert_close(logits(rescaled), logits(donor), atol=1e-5, rtol=1e-4)
    mother = rename_checkpoint(rescaled, tmp_path / "mother", wrap_language_model)

    result = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)

    assert result.compatibility.converted > 0
    assert_close(logits(result.out), logits(donor), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("direction", ["llama-father", "phi3-father"])
def test_phi3_fused_tensors_pair_with_llama(make_model, tmp_path, direction):
    """Phi-3's fused qkv_proj and gate_up_proj are cut into, or joined from, Llama's separate tensors."""
    donor = make_model("donor", seed=10)
    if direction == "llama-father":
        father, mother = make_model("father", seed=11), llama_as_phi3(donor, tmp_path / "phi3-mother")
        cut_or_joined = 10  # q, k, v, gate and up of 2 layers, each cut from a fused mother tensor
    else:
        father, mother = llama_as_phi3(make_model("plain-father", seed=11), tmp_path / "phi3-father"), donor
        cut_or_joined = 4  # qkv_proj and gate_up_proj of 2 layers, each joined from the mother's tensors

    result = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)

    assert result.compatibility.match_fraction == 1.0
    assert result.compatibility.split_or_joined == cut_or_joined
    assert_close(logits(result.out), logits(donor), atol=1e-5, rtol=1e-5)


def test_father_config_passes_through(make_model, tmp_path, char_tokenizer_dir, vocab_size):
    """Rope settings and fields outside every family rule are the father's, byte for byte."""
    father = make_model("father", seed=12, rope_theta=50000.0, rope_scaling={"rope_type": "linear", "factor": 2.0},
                        darwin_test_field={"kept": True})
    mother = save_family_model(tmp_path / "qwen2", "qwen2", vocab_size, char_tokenizer_dir, seed=13, rope_theta=1000000.0)

    result = breed(father, mother, tmp_path / "child", settings=BreedSettings(
        plan=PlanSettings(method="linear", ratio=0.5), mapper=MapperSettings(min_match=0.5), run_health=False, eval_suites=()))

    assert (result.out / "config.json").read_bytes() == (father / "config.json").read_bytes()
    assert any(note.startswith("rope settings differ") for note in result.compatibility.notes)
    # Qwen2's attention biases have no partner in the father's names, and Llama has none to give.
    assert result.compatibility.components["attention"].unmatched == 0


# --- deterministic, father-first resolution -----------------------------------------------------


def _resolution(father, mother) -> dict:
    mapping, report = resolve(resolve_parent(str(father)), resolve_parent(str(mother)))
    data = report.to_dict()
    data.pop("mother")
    return {
        "partners": {name: [(p.name, p.rows, p.scale, p.offset) for p in partner.pieces] for name, partner in mapping.mother.items()},
        "forced": {name: [action.value, reason] for name, (action, reason) in mapping.forced.items()},
        "report": data,
    }


def test_resolution_ignores_file_layout(make_model, tmp_path, char_tokenizer_dir, vocab_size):
    father = make_model("father", seed=14, layers=4)
    mother = save_family_model(tmp_path / "bamba", "bamba", vocab_size, char_tokenizer_dir, seed=15, num_hidden_layers=3)
    # The same tensors in two shards, written in reverse name order.
    tensors = load_weights(mother)
    reordered = tmp_path / "bamba-sharded"
    rename_checkpoint(mother, reordered, lambda name: name)
    (reordered / "model.safetensors").unlink()
    from safetensors.torch import save_file

    names = sorted(tensors, reverse=True)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for file_name, part in halves.items():
        save_file({name: tensors[name] for name in part}, reordered / file_name, metadata={"format": "pt"})
    weight_map = {name: file_name for file_name, part in halves.items() for name in part}
    (reordered / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    assert _resolution(father, mother) == _resolution(father, reordered)


def test_resolution_ignores_hash_seed(make_model, tmp_path, char_tokenizer_dir, vocab_size):
    father = make_model("father", seed=16, layers=4)
    mother = save_family_model(tmp_path / "bamba", "bamba", vocab_size, char_tokenizer_dir, seed=17, num_hidden_layers=3)
    script = (
        "import json, sys; sys.path.insert(0, 'tests'); from test_mapper import _resolution; "
        f"print(json.dumps(_resolution({str(father)!r}, {str(mother)!r}), sort_keys=True))"
    )
    outputs = []
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                                   cwd=Path(__file__).resolve().parent.parent, check=True)
        outputs.append(completed.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]


def test_father_first_under_swapped_parents(make_model, tmp_path, char_tokenizer_dir, vocab_size):
    llama = make_model("llama", seed=18)
    qwen = save_family_model(tmp_path / "qwen3", "qwen3", vocab_size, char_tokenizer_dir, seed=19)
    lenient = MapperSettings(min_match=0.5)
    for father, mother in ((llama, qwen), (qwen, llama)):
        father_parent, _, _, mapping = prepare(str(father), str(mother), settings=lenient)
        assert set(mapping.mother) | set(mapping.forced) == set(father_parent.checkpoint.tensors)
        assert mapping.report.father_family == json.loads((father / "config.json").read_text())["model_type"]
        child = breed(father, mother, tmp_path / f"child-of-{father.name}", settings=BreedSettings(
            plan=PlanSettings(method="linear", ratio=0.5), mapper=lenient, run_health=False, eval_suites=())).out
        assert load_weights(child).keys() == load_weights(father).keys()
