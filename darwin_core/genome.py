"""The 14-gene merge genome, its presets, JSON form and mapping to per-tensor ratios.

A ratio r in [0, 1] is always the fraction taken from the mother: r = 0 is the father's
tensor, r = 1 the mother's. Genome to ratio for a tensor T:

    r_genome(T) = 0.4 * global_ratio + 0.3 * component_gene(T) + 0.3 * block_gene(T)

where the component gene is `attn_ratio` (attention and mixer), `ffn_ratio` (FFN and router) or
`embed_ratio` (embedding and lm_head), and norms and other tensors use `global_ratio`; layer-less
tensors use `global_ratio` as their block gene. The three weights are a setting.
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import GenomeError
from .inventory import NUM_BLOCKS, Component, Slot

GENE_NAMES: tuple[str, ...] = (
    "global_ratio",
    "attn_ratio",
    "ffn_ratio",
    "embed_ratio",
    "density_a",
    "density_b",
    *(f"block_{index}_ratio" for index in range(NUM_BLOCKS)),
    "mri_trust",
    "merge_method_weight",
)

GENE_GROUPS: dict[str, tuple[str, ...]] = {
    "Global and components": ("global_ratio", "attn_ratio", "ffn_ratio", "embed_ratio"),
    "DARE densities": ("density_a", "density_b"),
    "Depth blocks": tuple(f"block_{index}_ratio" for index in range(NUM_BLOCKS)),
    "Fusion": ("mri_trust", "merge_method_weight"),
}

GENE_HELP: dict[str, str] = {
    "global_ratio": "overall share of the mother",
    "attn_ratio": "share of the mother in attention and state-space mixer tensors",
    "ffn_ratio": "share of the mother in FFN, expert and router tensors",
    "embed_ratio": "share of the mother in the embedding and lm_head",
    "density_a": "DARE keep probability of the father's task vector",
    "density_b": "DARE keep probability of the mother's task vector",
    **{f"block_{index}_ratio": f"share of the mother in depth block {index} of {NUM_BLOCKS}" for index in range(NUM_BLOCKS)},
    "mri_trust": "how much the MRI ratio overrides the genome ratio (0 = genome only, 1 = MRI only)",
    "merge_method_weight": "blend of DARE-TIES (0) and SLERP (1)",
}

_COMPONENT_GENE = {
    Component.ATTENTION: "attn_ratio",
    Component.MIXER: "attn_ratio",
    Component.FFN: "ffn_ratio",
    Component.ROUTER: "ffn_ratio",
    Component.EMBEDDING: "embed_ratio",
    Component.LM_HEAD: "embed_ratio",
}


def _check_gene(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenomeError(f"gene {name} must be a number in [0, 1], got {value!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise GenomeError(f"gene {name} must be in [0, 1], got {value}")
    return float(value)


@dataclass(frozen=True)
class Genome:
    """The 14 genes; every value lies in [0, 1]."""

    global_ratio: float = 0.5
    attn_ratio: float = 0.5
    ffn_ratio: float = 0.5
    embed_ratio: float = 0.5
    density_a: float = 1.0
    density_b: float = 1.0
    block_0_ratio: float = 0.5
    block_1_ratio: float = 0.5
    block_2_ratio: float = 0.5
    block_3_ratio: float = 0.5
    block_4_ratio: float = 0.5
    block_5_ratio: float = 0.5
    mri_trust: float = 0.5
    merge_method_weight: float = 0.5

    def __post_init__(self):
        for gene in fields(self):
            _check_gene(gene.name, getattr(self, gene.name))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def to_vector(self) -> np.ndarray:
        """Genes as a float64 vector in `GENE_NAMES` order."""
        return np.array([getattr(self, name) for name in GENE_NAMES], dtype=np.float64)

    @classmethod
    def from_vector(cls, vector) -> "Genome":
        """Build a genome from a vector in `GENE_NAMES` order, clipping each value into [0, 1]."""
        values = np.clip(np.asarray(vector, dtype=np.float64), 0.0, 1.0)
        if values.shape != (len(GENE_NAMES),):
            raise GenomeError(f"a genome vector has {len(GENE_NAMES)} values, got shape {values.shape}")
        return cls(**{name: float(value) for name, value in zip(GENE_NAMES, values)})

    @classmethod
    def from_dict(cls, values: dict, source: str = "genome") -> "Genome":
        """Build a genome from exactly the 14 named genes; names the missing or unknown ones otherwise."""
        if not isinstance(values, dict):
            raise GenomeError(f"{source}: expected a JSON object with the {len(GENE_NAMES)} genes, got {type(values).__name__}")
        # All problems in one message, so a hand-edited genome is fixed in one round.
        problems = []
        missing = [name for name in GENE_NAMES if name not in values]
        unknown = sorted(set(values) - set(GENE_NAMES))
        if missing:
            problems.append(f"missing gene(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown gene(s) {', '.join(unknown)}")
        for name in GENE_NAMES:
            if name in values:
                try:
                    _check_gene(name, values[name])
                except GenomeError as error:
                    problems.append(str(error))
        if problems:
            raise GenomeError(f"{source}: {'; '.join(problems)}. A genome must contain each of {', '.join(GENE_NAMES)} once")
        return cls(**{name: values[name] for name in GENE_NAMES})

    def replace(self, **changes: float) -> "Genome":
        return Genome(**{**self.to_dict(), **changes})


@dataclass(frozen=True)
class GenomeWeights:
    """Weights of the global, component and block genes in r_genome; they must sum to 1."""

    global_weight: float = 0.4
    component_weight: float = 0.3
    block_weight: float = 0.3

    def __post_init__(self):
        total = self.global_weight + self.component_weight + self.block_weight
        if min(self.global_weight, self.component_weight, self.block_weight) < 0 or not math.isclose(total, 1.0, abs_tol=1e-6):
            raise GenomeError(
                f"genome weights must be non-negative and sum to 1, got {self.global_weight}, "
                f"{self.component_weight}, {self.block_weight} (sum {total})"
            )


@dataclass(frozen=True)
class LayerRatios:
    """Extended genome: one attention and one FFN ratio per layer, replacing the component and
    block genes for the tensors of that layer (the 14-gene genome still covers layer-less ones)."""

    attn: tuple[float, ...] = field(default_factory=tuple)
    ffn: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if len(self.attn) != len(self.ffn):
            raise GenomeError(f"extended genome: {len(self.attn)} attention ratios but {len(self.ffn)} FFN ratios")
        for kind, values in (("attn", self.attn), ("ffn", self.ffn)):
            for layer, value in enumerate(values):
                _check_gene(f"{kind}_layer_{layer}", value)

    @property
    def num_layers(self) -> int:
        return len(self.attn)

    def to_dict(self) -> dict:
        return {"attn": list(self.attn), "ffn": list(self.ffn)}

    @classmethod
    def from_dict(cls, values: dict, source: str = "extended genome") -> "LayerRatios":
        if not isinstance(values, dict) or set(values) != {"attn", "ffn"}:
            raise GenomeError(f"{source}: expected an object with the lists 'attn' and 'ffn'")
        try:
            return cls(attn=tuple(values["attn"]), ffn=tuple(values["ffn"]))
        except (TypeError, GenomeError) as error:
            raise GenomeError(f"{source}: {error}") from None

    def check_layers(self, num_layers: int) -> None:
        if self.num_layers != num_layers:
            raise GenomeError(
                f"extended genome has ratios for {self.num_layers} layers but the father has {num_layers}; "
                "build the extended genome for this model's layer count"
            )


def genome_ratio(genome: Genome, slot: Slot, weights: GenomeWeights = GenomeWeights(), layers: LayerRatios | None = None) -> float:
    """r_genome for one tensor: the weighted genes of its component and depth block."""
    if layers is not None and slot.layer is not None and slot.layer < layers.num_layers:
        if slot.component in (Component.ATTENTION, Component.MIXER):
            return layers.attn[slot.layer]
        if slot.component in (Component.FFN, Component.ROUTER):
            return layers.ffn[slot.layer]

    component_gene = getattr(genome, _COMPONENT_GENE.get(slot.component, "global_ratio"))
    block_gene = genome.global_ratio if slot.block is None else getattr(genome, f"block_{slot.block}_ratio")
    return weights.global_weight * genome.global_ratio + weights.component_weight * component_gene + weights.block_weight * block_gene


def _resample_blocks(values: list[float], count: int = NUM_BLOCKS) -> list[float]:
    """Map block genes published for another block count onto `count` equal depth blocks,
    averaging the source blocks weighted by how much of each target block they cover."""
    source = len(values)
    result = []
    for target in range(count):
        low, high = target / count, (target + 1) / count
        weighted = 0.0
        for index, value in enumerate(values):
            overlap = max(0.0, min(high, (index + 1) / source) - max(low, index / source))
            weighted += overlap * value
        result.append(weighted / (high - low))
    return result


# The method's authors published the genome of their 4B child (father google/gemma-4-E4B-it,
# mother arsovskidev/Gemma-4-E4B-Claude-4.6-Opus-Reasoning-Distilled, ARC-Challenge 0.8292) on
# its Hugging Face card SeaWolf-AI/Darwin-gemma-4-E4B-it-x-Gemma-4-E4B-Claude-4-08292. Their engine
# used 8 depth blocks; the block genes below are resampled onto our 6.
_PUBLISHED_4B_BLOCKS = [0.5740, 0.5811, 0.5736, 0.4697, 0.4930, 0.8418, 0.4907, 0.3623]

PRESETS: dict[str, Genome] = {
    "balanced": Genome(),
    "father-heavy": Genome(
        global_ratio=0.25, attn_ratio=0.25, ffn_ratio=0.25, embed_ratio=0.25,
        **{f"block_{index}_ratio": 0.25 for index in range(NUM_BLOCKS)},
    ),
    "mother-heavy": Genome(
        global_ratio=0.75, attn_ratio=0.75, ffn_ratio=0.75, embed_ratio=0.75,
        **{f"block_{index}_ratio": 0.75 for index in range(NUM_BLOCKS)},
    ),
    "ffn-from-mother": Genome(attn_ratio=0.0, ffn_ratio=1.0, mri_trust=0.0),
    "published-4b": Genome(
        global_ratio=0.4989, attn_ratio=0.1766, ffn_ratio=0.9021, embed_ratio=0.6122,
        density_a=0.9951, density_b=0.9617,
        **{f"block_{index}_ratio": round(value, 4) for index, value in enumerate(_resample_blocks(_PUBLISHED_4B_BLOCKS))},
        mri_trust=0.8521, merge_method_weight=0.9519,
    ),
}
DEFAULT_PRESET = "balanced"

PRESET_HELP: dict[str, str] = {
    "balanced": "every ratio 0.5, no DARE dropout, MRI trust 0.5, DARE-TIES and SLERP blended equally",
    "father-heavy": "every ratio 0.25: keeps three quarters of the father",
    "mother-heavy": "every ratio 0.75: takes three quarters from the mother",
    "ffn-from-mother": "attention from the father, FFN from the mother, MRI off",
    "published-4b": "the genome published for the method authors' 4B child (8 blocks resampled to 6)",
}


def load_genome(path: str | Path) -> Genome:
    """Read a genome JSON file: either the 14 genes at top level, or a `genome` object (as in darwin.json)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GenomeError(f"genome file {path} not found") from None
    except json.JSONDecodeError as error:
        raise GenomeError(f"{path}: invalid JSON at line {error.lineno} ({error.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("genome"), dict):
        data = data["genome"]
    return Genome.from_dict(data, source=str(path))


def load_layer_ratios(path: str | Path) -> LayerRatios | None:
    """Read the optional `layers` object (extended genome) from a genome JSON file."""
    data = json.loads(Path(path).read_text())
    layers = data.get("layers") if isinstance(data, dict) else None
    return LayerRatios.from_dict(layers, source=f"{path}: layers") if layers is not None else None


def save_genome(genome: Genome, path: str | Path, layers: LayerRatios | None = None) -> None:
    data: dict = genome.to_dict()
    if layers is not None:
        data = {"genome": data, "layers": layers.to_dict()}
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
