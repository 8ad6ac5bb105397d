"""Genome validation, JSON round trips, the genome-to-ratio mapping and the merge plan."""

import json
import math

import numpy as np
import pytest

from darwin_core.choices import PRESET_NAMES
from darwin_core.errors import DarwinError, GenomeError
from darwin_core.genome import (
    GENE_NAMES,
    PRESETS,
    Genome,
    GenomeWeights,
    LayerRatios,
    _resample_blocks,
    genome_ratio,
    load_genome,
    load_layer_ratios,
    save_genome,
)
from darwin_core.inventory import Component, Slot, block_of, build_inventory
from darwin_core.plan import Action, PlanSettings, build_plan


def slot(component: Component, layer: int | None, num_layers: int = 12) -> Slot:
    block = None if layer is None else block_of(layer, num_layers)
    return Slot(f"{component.value}.{layer}", component, layer, block, (4, 4))


ALL_SLOTS = [slot(component, layer) for component in Component for layer in (None, 0, 5, 11)]


def test_genome_has_14_genes():
    assert len(GENE_NAMES) == 14
    assert len(Genome().to_dict()) == 14


def test_vector_round_trip():
    genome = Genome.from_vector(np.linspace(0, 1, 14))
    assert np.allclose(Genome.from_vector(genome.to_vector()).to_vector(), genome.to_vector())


def test_vector_clipped_into_range():
    genome = Genome.from_vector([1.5] + [-0.2] * 13)
    assert genome.global_ratio == 1.0
    assert genome.attn_ratio == 0.0


def test_json_round_trip(tmp_path):
    genome = PRESETS["published-4b"]
    path = tmp_path / "genome.json"
    save_genome(genome, path)
    assert load_genome(path) == genome


def test_json_with_layers_round_trip(tmp_path):
    layers = LayerRatios(attn=(0.1, 0.2), ffn=(0.9, 0.8))
    path = tmp_path / "genome.json"
    save_genome(Genome(), path, layers)
    assert load_genome(path) == Genome()
    assert load_layer_ratios(path) == layers


def test_genome_read_from_darwin_json(tmp_path):
    path = tmp_path / "darwin.json"
    path.write_text(json.dumps({"genome": Genome(global_ratio=0.3).to_dict(), "seed": 1}))
    assert load_genome(path).global_ratio == 0.3


def test_invalid_genome_lists_every_problem(tmp_path):
    values = Genome().to_dict()
    values.pop("ffn_ratio")
    values["bogus"] = 1
    values["global_ratio"] = 2.5
    path = tmp_path / "bad-genome.json"
    path.write_text(json.dumps(values))
    with pytest.raises(GenomeError) as raised:
        load_genome(path)
    message = str(raised.value)
    assert "missing gene(s) ffn_ratio" in message
    assert "unknown gene(s) bogus" in message
    assert "gene global_ratio must be in [0, 1], got 2.5" in message


@pytest.mark.parametrize(
    "change, message",
    [
        ({"drop": "ffn_ratio"}, r"missing gene\(s\) ffn_ratio"),
        ({"extra": ("block_6_ratio", 0.5)}, r"unknown gene\(s\) block_6_ratio"),
        ({"set": ("attn_ratio", 1.2)}, r"gene attn_ratio must be in \[0, 1\], got 1.2"),
        ({"set": ("attn_ratio", -0.1)}, r"gene attn_ratio must be in \[0, 1\], got -0.1"),
        ({"set": ("mri_trust", float("nan"))}, r"gene mri_trust must be in \[0, 1\], got nan"),
        ({"set": ("density_a", "0.5")}, r"gene density_a must be a number in \[0, 1\], got '0.5'"),
        ({"set": ("density_b", True)}, r"gene density_b must be a number"),
    ],
    ids=["missing", "unknown", "above-one", "negative", "nan", "string", "bool"],
)
def test_invalid_genome_files(tmp_path, change, message):
    values = Genome().to_dict()
    if "drop" in change:
        values.pop(change["drop"])
    if "extra" in change:
        values[change["extra"][0]] = change["extra"][1]
    if "set" in change:
        values[change["set"][0]] = change["set"][1]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(values).replace("NaN", "NaN"))
    with pytest.raises(GenomeError, match=message):
        load_genome(path)


def test_genome_file_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(GenomeError, match="invalid JSON at line 1"):
        load_genome(path)


def test_genome_file_missing(tmp_path):
    with pytest.raises(GenomeError, match="not found"):
        load_genome(tmp_path / "nope.json")


@pytest.mark.parametrize("value", [0.0, 0.3, 0.5, 1.0])
def test_uniform_genome_gives_uniform_ratio(value):
    genome = Genome(
        global_ratio=value, attn_ratio=value, ffn_ratio=value, embed_ratio=value,
        **{f"block_{index}_ratio": value for index in range(6)},
    )
    for each in ALL_SLOTS:
        assert math.isclose(genome_ratio(genome, each), value, abs_tol=1e-12)


def test_ratio_formula_weights():
    genome = Genome(global_ratio=1.0, attn_ratio=0.0, ffn_ratio=0.5, block_2_ratio=0.2)
    attention = slot(Component.ATTENTION, 5)  # layer 5 of 12 is block 2
    assert attention.block == 2
    assert math.isclose(genome_ratio(genome, attention), 0.4 * 1.0 + 0.3 * 0.0 + 0.3 * 0.2)
    norm = slot(Component.NORM, None)
    assert math.isclose(genome_ratio(genome, norm), 1.0)
    mixer = slot(Component.MIXER, 5)
    assert math.isclose(genome_ratio(genome, mixer), genome_ratio(genome, attention))


def test_genome_weights_must_sum_to_one():
    with pytest.raises(GenomeError, match="sum to 1"):
        GenomeWeights(0.5, 0.5, 0.5)


def test_layer_ratios_override_layer_tensors():
    layers = LayerRatios(attn=tuple([0.1] * 12), ffn=tuple([0.9] * 12))
    assert genome_ratio(Genome(), slot(Component.ATTENTION, 3), layers=layers) == 0.1
    assert genome_ratio(Genome(), slot(Component.FFN, 3), layers=layers) == 0.9
    assert genome_ratio(Genome(), slot(Component.EMBEDDING, None), layers=layers) == 0.5


def test_layer_ratios_wrong_layer_count():
    with pytest.raises(GenomeError, match="ratios for 4 layers but the father has 12"):
        LayerRatios(attn=(0.5,) * 4, ffn=(0.5,) * 4).check_layers(12)


def test_layer_ratios_invalid_value():
    with pytest.raises(GenomeError, match=r"ffn_layer_1 must be in \[0, 1\]"):
        LayerRatios(attn=(0.5, 0.5), ffn=(0.5, 2.0))


def test_block_partition_uneven():
    assert [block_of(layer, 8) for layer in range(8)] == [0, 0, 1, 2, 3, 3, 4, 5]
    assert [block_of(layer, 6) for layer in range(6)] == [0, 1, 2, 3, 4, 5]


def test_presets_listed_in_choices():
    assert tuple(PRESETS) == PRESET_NAMES


def test_published_blocks_resampled():
    resampled = _resample_blocks([0.0] * 4 + [1.0] * 4)
    assert len(resampled) == 6
    assert resampled[0] == 0.0 and resampled[-1] == 1.0
    assert math.isclose(sum(resampled) / 6, 0.5)


# --- merge plan -----------------------------------------------------------------------------


@pytest.fixture
def inventory(llama_family):
    from darwin_core.checkpoint import Checkpoint

    checkpoint = Checkpoint(llama_family["a"])
    return build_inventory(checkpoint.tensors, checkpoint.config)


def test_plan_all_father_with_zero_genes(inventory):
    genome = Genome.from_vector(np.zeros(14)).replace(density_a=1.0, density_b=1.0)
    plan = build_plan(inventory, genome, mri_ratios={name: 0.9 for name in inventory})
    assert plan.counts() == {"transplant_a": len(inventory), "transplant_b": 0, "blended": 0}


def test_plan_trust_moves_ratio(inventory):
    genome = Genome(mri_trust=1.0)
    ratios = {name: 0.95 for name in inventory}
    plan = build_plan(inventory, genome, mri_ratios=ratios)
    assert plan.counts()["transplant_b"] == len(inventory)
    assert all(entry.r_final == 0.95 for entry in plan.entries.values())


def test_plan_fusion_formula(inventory):
    genome = Genome(mri_trust=0.25)
    ratios = {name: 0.9 for name in inventory}
    plan = build_plan(inventory, genome, mri_ratios=ratios)
    for entry in plan.entries.values():
        assert math.isclose(entry.r_final, 0.25 * 0.9 + 0.75 * entry.r_genome)
        assert entry.action is Action.BLEND


def test_plan_fixed_recipe(inventory):
    plan = build_plan(inventory, Genome(), PlanSettings(method="linear", ratio=0.3))
    assert all(entry.r_final == 0.3 and entry.action is Action.BLEND for entry in plan.entries.values())


def test_plan_inverted_thresholds_rejected():
    with pytest.raises(DarwinError, match="transplant thresholds must satisfy 0 <= low <= high <= 1, got low 0.9 and high 0.1"):
        PlanSettings(transplant_low=0.9, transplant_high=0.1)


def test_plan_unknown_method_rejected():
    with pytest.raises(ValueError, match="unknown merge method 'magic'; supported: darwin, linear"):
        PlanSettings(method="magic")
