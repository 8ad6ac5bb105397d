"""The merge plan: for every tensor, its ratio, its action and its operator parameters.

The plan is computed from the genome, the MRI ratios and the settings before any child tensor
is, so it can be inspected, shown as a heatmap and counted. MRI-Trust Fusion:

    r_final(T) = mri_trust * r_MRI(T) + (1 - mri_trust) * r_genome(T)

A tensor with r_final below the low threshold (0.15) is copied whole from the father, one above
the high threshold (0.85) from the mother, and every other tensor is blended.
"""

from dataclasses import asdict, dataclass, field
from enum import Enum

from .errors import DarwinError
from .genome import Genome, GenomeWeights, LayerRatios, genome_ratio
from .inventory import Slot
from .merge_methods import FIXED_METHODS, MERGE_METHODS, check_method


class Action(str, Enum):
    TRANSPLANT_A = "transplant_a"
    TRANSPLANT_B = "transplant_b"
    BLEND = "blend"


@dataclass(frozen=True)
class PlanSettings:
    """Settings of the plan; `ratio`, `density` and `normalize` apply to fixed-recipe methods only."""

    method: str = "darwin"
    ratio: float = 0.5
    density: float = 1.0
    normalize: bool = False
    transplant_low: float = 0.15
    transplant_high: float = 0.85
    genome_weights: GenomeWeights = field(default_factory=GenomeWeights)

    def __post_init__(self):
        check_method(self.method)
        if not 0.0 <= self.ratio <= 1.0:
            raise DarwinError(f"ratio must be in [0, 1], got {self.ratio}")
        if not 0.0 <= self.density <= 1.0:
            raise DarwinError(f"density must be in [0, 1], got {self.density}")
        if not 0.0 <= self.transplant_low <= self.transplant_high <= 1.0:
            raise DarwinError(
                f"transplant thresholds must satisfy 0 <= low <= high <= 1, got low {self.transplant_low} "
                f"and high {self.transplant_high}; swap them if they are inverted"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TensorPlan:
    """What happens to one tensor. `r_mri` is None in fixed-recipe mode; `reason` explains a forced action."""

    name: str
    component: str
    layer: int | None
    block: int | None
    r_genome: float
    r_mri: float | None
    r_final: float
    action: Action
    density_a: float
    density_b: float
    method_weight: float
    reason: str | None = None


@dataclass
class MergePlan:
    method: str
    entries: dict[str, TensorPlan]

    def counts(self) -> dict[str, int]:
        counts = {"transplant_a": 0, "transplant_b": 0, "blended": 0}
        for entry in self.entries.values():
            key = "blended" if entry.action is Action.BLEND else entry.action.value
            counts[key] += 1
        return counts

    def mean_ratio(self) -> float:
        return sum(entry.r_final for entry in self.entries.values()) / max(len(self.entries), 1)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            **self.counts(),
            "mean_ratio": self.mean_ratio(),
            "tensors": {
                name: {**asdict(entry), "action": entry.action.value} for name, entry in self.entries.items()
            },
        }


def build_plan(
    inventory: dict[str, Slot],
    genome: Genome,
    settings: PlanSettings = PlanSettings(),
    mri_ratios: dict[str, float] | None = None,
    layers: LayerRatios | None = None,
    forced: dict[str, tuple[Action, str]] | None = None,
) -> MergePlan:
    """Compute the per-tensor plan for the father's inventory.

    `forced` maps tensor names to an action and its reason (a tensor only the father has, an
    integer buffer); it overrides the ratio. Without `mri_ratios`, r_MRI counts as 0.5.
    """
    if settings.method not in MERGE_METHODS:
        raise DarwinError(f"unknown method {settings.method!r}")
    forced = forced or {}
    entries = {}
    for name, slot in inventory.items():
        if settings.method in FIXED_METHODS:
            entry = TensorPlan(
                name, slot.component.value, slot.layer, slot.block, settings.ratio, None, settings.ratio,
                Action.BLEND, settings.density, settings.density, 0.0,
            )
        else:
            r_genome = genome_ratio(genome, slot, settings.genome_weights, layers)
            r_mri = (mri_ratios or {}).get(name, 0.5)
            r_final = genome.mri_trust * r_mri + (1.0 - genome.mri_trust) * r_genome
            if r_final < settings.transplant_low:
                action = Action.TRANSPLANT_A
            elif r_final > settings.transplant_high:
                action = Action.TRANSPLANT_B
            else:
                action = Action.BLEND
            entry = TensorPlan(
                name, slot.component.value, slot.layer, slot.block, r_genome, r_mri, r_final, action,
                genome.density_a, genome.density_b, genome.merge_method_weight,
            )
        if name in forced:
            action, reason = forced[name]
            entry = TensorPlan(**{**asdict(entry), "action": action, "reason": reason})
        entries[name] = entry
    return MergePlan(method=settings.method, entries=entries)
