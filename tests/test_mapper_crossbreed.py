"""Architecture Mapper across depths and shapes, and the FFN crossbreed of a Transformer with a
hybrid Transformer/state-space model: plan, per-layer ratios, health check and evolution."""

import json

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from darwin_core.breed import BreedSettings, breed
from darwin_core.evolve import Evolution, EvolveSettings
from darwin_core.genome import Genome, LayerRatios
from darwin_core.health import check_health
from darwin_core.inventory import proportional_layer_map
from darwin_core.mapper import MapperSettings, MatchError
from darwin_core.mri import MriReport
from darwin_core.plan import PlanSettings
from darwin_core.probes import ProbeProfile
from factories import llama_config, save_model
from mapper_factories import load_weights, logits, save_family_model

MOTHER_ONLY = BreedSettings(plan=PlanSettings(method="linear", ratio=1.0), run_health=False, eval_suites=())
CROSSBREED = MapperSettings(crossbreed="ffn")
FFN_SUFFIXES = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "post_attention_layernorm.weight")
BAMBA_FFN = {"mlp.gate_proj.weight": "feed_forward.gate_proj.weight", "mlp.up_proj.weight": "feed_forward.up_proj.weight",
             "mlp.down_proj.weight": "feed_forward.down_proj.weight", "post_attention_layernorm.weight": "pre_ff_layernorm.weight"}


@pytest.mark.parametrize(
    ("layers", "partner_layers", "expected"),
    [(4, 2, [0, 0, 1, 1]), (2, 4, [1, 3]), (3, 2, [0, 1, 1]), (6, 6, [0, 1, 2, 3, 4, 5]), (42, 1, [0] * 42)],
    ids=["halve", "double", "three-to-two", "same", "to-one"],
)
def test_proportional_layer_map(layers, partner_layers, expected):
    assert proportional_layer_map(layers, partner_layers) == expected


def test_different_depths_align_proportionally(make_model, tmp_path):
    father = make_model("father", seed=1, layers=4)
    mother = make_model("mother", seed=2, layers=2)

    result = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)

    assert result.compatibility.layer_map == [0, 0, 1, 1]
    child, mother_weights = load_weights(result.out), load_weights(mother)
    for layer, source in enumerate([0, 0, 1, 1]):
        name = f"model.layers.{layer}.self_attn.q_proj.weight"
        assert torch.equal(child[name], mother_weights[name.replace(f".{layer}.", f".{source}.")]), name
    assert json.loads((result.out / "config.json").read_text())["num_hidden_layers"] == 4


def test_shape_mismatch_kept_from_father_and_counted(make_model, tmp_path):
    father = make_model("father", seed=3)
    mother = make_model("mother", seed=4, ffn=48)
    settings = BreedSettings(plan=PlanSettings(method="linear", ratio=1.0), mapper=MapperSettings(min_match=0.5),
                             run_health=False, eval_suites=())

    result = breed(father, mother, tmp_path / "child", settings=settings)

    report = result.compatibility
    assert report.components["ffn"].shape_mismatched == 6  # gate, up and down of 2 layers
    assert report.shape_mismatches[0].father_shape == (32, 64)
    assert report.shape_mismatches[0].mother_shape == (32, 48)
    child, father_weights, mother_weights = load_weights(result.out), load_weights(father), load_weights(mother)
    for name in father_weights:
        source = father_weights if any(name.endswith(f"mlp.{kind}_proj.weight") for kind in ("gate", "up", "down")) else mother_weights
        assert torch.equal(child[name], source[name]), name
    assert result.plan.entries["model.layers.0.mlp.up_proj.weight"].reason.startswith("the mother's partner has another shape")


def test_min_match_setting_rejected_outside_unit_interval():
    with pytest.raises(ValueError, match=r"min_match must be in \[0, 1\], got 1.5"):
        MapperSettings(min_match=1.5)


# --- FFN crossbreed with a hybrid mother ---------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid_pair(tmp_path_factory, char_tokenizer_dir, vocab_size):
    """A 4-layer Llama father and a 3-layer Bamba mother (attention in layer 1, Mamba-2 elsewhere)
    with the father's hidden and FFN sizes."""
    root = tmp_path_factory.mktemp("hybrid-pair")
    father = save_model(root / "llama", llama_config(vocab_size, layers=4), seed=5, tokenizer_from=char_tokenizer_dir)
    mother = save_family_model(root / "bamba", "bamba", vocab_size, char_tokenizer_dir, seed=6, num_hidden_layers=3)
    return father, mother


def test_full_merge_with_hybrid_stops_with_report(hybrid_pair, tmp_path):
    father, mother = hybrid_pair
    with pytest.raises(MatchError, match=r"of 39 father tensors .* below min_match 80%.*no counterpart, for example "
                                         r"model.layers.0.self_attn.k_proj.weight.*FFN crossbreed mode") as error:
        breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)
    assert error.value.report.components["ffn"].matched == 16
    assert not (tmp_path / "child").exists()


def test_ffn_crossbreed_blends_each_layer(hybrid_pair, tmp_path):
    father, mother = hybrid_pair
    ratios = (0.2, 0.4, 0.6, 0.8)
    layers = LayerRatios(attn=(0.5,) * 4, ffn=ratios)
    genome = Genome(mri_trust=0.0, merge_method_weight=0.0)  # r_final = the layer ratio, pure DARE-TIES at density 1
    settings = BreedSettings(mapper=CROSSBREED, eval_suites=())

    result = breed(father, mother, tmp_path / "child", genome=genome, layers=layers, settings=settings)

    report = result.compatibility
    assert report.crossbreed == "ffn"
    assert report.match_fraction == 1.0
    assert report.layer_map == [0, 1, 1, 2]
    child, father_weights, mother_weights = load_weights(result.out), load_weights(father), load_weights(mother)
    for name, tensor in father_weights.items():
        suffix = next((s for s in FFN_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            assert torch.equal(child[name], tensor), name  # attention, embeddings and norms stay the father's
            continue
        layer = int(name.split(".")[2])
        partner = mother_weights[f"model.layers.{report.layer_map[layer]}.{BAMBA_FFN[suffix]}"]
        assert_close(child[name], tensor + ratios[layer] * (partner - tensor), atol=1e-6, rtol=1e-5)
    assert result.plan.counts()["blended"] == 16

    assert torch.isfinite(logits(result.out)).all()
    assert result.health is not None
    assert result.health.verdict == "healthy", result.health.reasons
    assert len(result.health.layers) == 4


def test_evolve_searches_crossbreed_layer_ratios(hybrid_pair, tmp_path):
    father, mother = hybrid_pair
    suite = tmp_path / "letters.jsonl"
    rng = np.random.default_rng(0)
    rows = []
    for split in ("search", "test"):
        for index in range(8):
            first, second = rng.choice(list("abcdefghij"), size=2, replace=False)
            rows.append(json.dumps({"id": f"{split}-{index}", "split": split, "skill": "letters", "kind": "choice",
                                    "prompt": f"{first}{second}=", "choices": [str(first), str(second)], "answer": index % 2}))
    suite.write_text("\n".join(rows) + "\n")
    settings = EvolveSettings(population=4, generations=1, seed=3, space="layers", suites=((str(suite), 1.0),))

    evolution = Evolution(father, mother, settings=settings, breed_settings=BreedSettings(mapper=CROSSBREED, run_health=False, eval_suites=()))
    result = evolution.run()

    assert evolution.codec.dimension == 2 * 4 + 1
    assert len(result.candidates) == 4
    assert all(candidate.error is None for candidate in result.candidates)
    assert len(result.layers.ffn) == 4
    forced = evolution.context().forced
    assert all(name in forced for name in load_weights(father) if ".self_attn." in name)


# --- probe profiles of a mother with another depth -----------------------------------------------


def profile(values: list[float]) -> ProbeProfile:
    return ProbeProfile(influence={"math": list(values)}, loss={"math": 1.0})


def test_health_aligns_mother_depth():
    report = check_health(profile([0.1, 0.2, 0.3, 0.4]), profile([0.1, 0.2, 0.3, 0.4]), profile([0.15, 0.35]))
    assert [row["mother"] for row in report.layers] == [0.15, 0.15, 0.35, 0.35]
    assert report.families["math"]["mother"] == [0.15, 0.15, 0.35, 0.35]


def test_mri_probe_term_aligns_mother_depth():
    report = MriReport(
        father="a", mother="b", base=None, num_layers=4, settings={"static_weight": 0.4, "probe_weight": 0.6, "family_weights": {}},
        tensors={}, probe_a=profile([0.1, 0.2, 0.3, 0.4]), probe_b=profile([0.8, 0.2]), task_cosine=[None] * 4,
    )
    probe_a, probe_b = report.probe_scores()
    assert probe_a == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert probe_b == pytest.approx([1.0, 1.0, 0.25, 0.25])


def test_studio_match_table_and_summary(hybrid_pair):
    from app.tables import match_summary, match_table
    from darwin_core.mapper import match_parents
    from darwin_core.parents import resolve_parent

    father, mother = hybrid_pair
    report = match_parents(resolve_parent(str(father)), resolve_parent(str(mother)), settings=CROSSBREED)

    table = match_table(report)
    assert list(table.columns) == ["component", "matched", "shape-mismatched", "unmatched", "total"]
    ffn = table[table["component"] == "ffn"].iloc[0]
    assert (ffn["matched"], ffn["unmatched"]) == (16, 0)
    assert table.iloc[-1]["total"] == 39
    summary = match_summary(report)
    assert summary.startswith("**breedable**: 16 of 16 father FFN tensors pair with the mother (100%")
    assert "father to mother layer: 0→0, 1→1, 2→1, 3→2" in summary
    assert "`model.layers.0.self_attn.k_proj.weight`" in summary


def test_failed_match_suggests_ffn_crossbreed(hybrid_pair, capsys):
    """Without crossbreed mode too few tensors of the hybrid pair match, so both reports suggest FFN crossbreed."""
    from app.tables import match_summary
    from darwin_core.cli import main
    from darwin_core.mapper import MapperSettings, match_parents
    from darwin_core.parents import resolve_parent

    father, mother = hybrid_pair
    report = match_parents(resolve_parent(str(father)), resolve_parent(str(mother)), settings=MapperSettings())
    assert not report.passed
    assert "try **FFN crossbreed** mode" in match_summary(report)
    crossbred = match_parents(resolve_parent(str(father)), resolve_parent(str(mother)), settings=CROSSBREED)
    assert "try **FFN crossbreed**" not in match_summary(crossbred)

    assert main(["inspect", str(father), str(mother)]) == 0
    out = capsys.readouterr().out
    assert "same-family merge: no; the mapper below pairs the parents across layouts" in out
    assert "hint: --crossbreed ffn" in out


def test_scan_after_check_skips_unbreedable(hybrid_pair, tmp_path, monkeypatch):
    """The report already explains why the pair cannot breed, so the scan chained after the check is skipped."""
    import gradio as gr

    import app.state as state
    from app import callbacks

    monkeypatch.setattr(state, "SESSIONS_ROOT", tmp_path / "sessions")
    father, mother = (str(path) for path in hybrid_pair)
    session, _, summary, _ = callbacks.check_parents(father, mother, "", "none", 0.8, None)
    assert not session.breedable
    assert "too few tensors pair to breed" in summary
    assert list(callbacks.scan_after_check(session)[1:]) == [gr.skip()] * 7

    session, _, summary, _ = callbacks.check_parents(father, mother, "", "ffn", 0.8, session)
    assert session.breedable
    assert "**breedable**" in summary
    session.close()
