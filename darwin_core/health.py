"""Health check of a child against its parents.

A layer is flagged when the child's block influence (averaged over probe families) leaves the
band between the two parents' values by more than a tolerance: `margin` times the parents'
mean influence at that layer, and at least `floor`. Far above the band means interference
(the layer now rewrites the stream much more than either parent did); far below means lost
function. Also checked: non-finite weights, the child's probe loss against the parents', and
repetition collapse of greedy generation.

Verdict: `failed` for non-finite weights or a probe loss above `loss_failure_ratio` times the
worse parent's; `warning` for flagged layers, a loss above `loss_warning_ratio` times the worse
parent's, or repetition collapse; `healthy` otherwise.
"""

from dataclasses import asdict, dataclass, field
from typing import Literal

from .inventory import proportional_layer_map
from .probes import ProbeProfile, weighted_influence

Verdict = Literal["healthy", "warning", "failed"]


@dataclass(frozen=True)
class HealthSettings:
    margin: float = 0.5
    floor: float = 0.01
    loss_warning_ratio: float = 1.25
    loss_failure_ratio: float = 2.0
    repetition_gap: float = 0.25

    def __post_init__(self):
        if self.margin < 0 or self.floor < 0:
            raise ValueError(f"health margin and floor must be non-negative, got {self.margin} and {self.floor}")
        if not 1.0 <= self.loss_warning_ratio <= self.loss_failure_ratio:
            raise ValueError(
                f"loss ratios must satisfy 1 <= warning <= failure, got {self.loss_warning_ratio} and {self.loss_failure_ratio}"
            )


@dataclass
class HealthReport:
    verdict: str
    reasons: list[str]
    layers: list[dict]
    families: dict[str, dict[str, list[float]]]
    loss: dict[str, float]
    repetition: dict[str, float]
    nonfinite_tensors: list[str] = field(default_factory=list)

    @property
    def flagged_layers(self) -> list[int]:
        return [row["layer"] for row in self.layers if row["flagged"]]

    def to_dict(self) -> dict:
        return asdict(self)


def _mean_loss(profile: ProbeProfile) -> float:
    return sum(profile.loss.values()) / max(len(profile.loss), 1)


def align_layers(profile: ProbeProfile, num_layers: int) -> ProbeProfile:
    """Resample a probe profile to `num_layers` layers by proportional layer alignment."""
    layers = len(next(iter(profile.influence.values()), []))
    if layers == num_layers or not layers or not num_layers:
        return profile
    source = proportional_layer_map(num_layers, layers)
    influence = {family: [values[layer] for layer in source] for family, values in profile.influence.items()}
    return ProbeProfile(influence=influence, loss=dict(profile.loss), repetition=profile.repetition)


def check_health(
    child: ProbeProfile,
    father: ProbeProfile,
    mother: ProbeProfile,
    nonfinite_tensors: list[str] | None = None,
    settings: HealthSettings = HealthSettings(),
) -> HealthReport:
    """Compare the child's probe profile with both parents' and give the verdict with its reasons."""
    nonfinite_tensors = list(nonfinite_tensors or [])
    # The child has the father's layers; a mother of another depth is compared at the
    # proportionally aligned layer of each child layer.
    num_layers = len(next(iter(child.influence.values()), []))
    father, mother = align_layers(father, num_layers), align_layers(mother, num_layers)
    child_mean, father_mean, mother_mean = (weighted_influence(p) for p in (child, father, mother))

    layers = []
    for layer, (value, a, b) in enumerate(zip(child_mean, father_mean, mother_mean)):
        tolerance = max(settings.margin * (a + b) / 2.0, settings.floor)
        low, high = min(a, b) - tolerance, max(a, b) + tolerance
        flagged = not low <= value <= high
        direction = "above" if value > high else "below" if value < low else None
        layers.append({
            "layer": layer, "child": value, "father": a, "mother": b, "low": low, "high": high,
            "flagged": flagged, "direction": direction,
        })

    families = {
        family: {"child": child.influence[family], "father": father.influence[family], "mother": mother.influence[family]}
        for family in child.influence
        if family in father.influence and family in mother.influence
    }
    loss = {"child": _mean_loss(child), "father": _mean_loss(father), "mother": _mean_loss(mother)}
    repetition = {"child": child.repetition, "father": father.repetition, "mother": mother.repetition}

    failures, warnings = [], []
    if nonfinite_tensors:
        failures.append(f"{len(nonfinite_tensors)} tensors hold NaN or Inf values, for example {nonfinite_tensors[0]}")
    worse_parent_loss = max(loss["father"], loss["mother"])
    if loss["child"] != loss["child"] or loss["child"] > settings.loss_failure_ratio * worse_parent_loss:
        failures.append(f"probe loss {loss['child']:.3f} is far above the worse parent's {worse_parent_loss:.3f}")
    elif loss["child"] > settings.loss_warning_ratio * worse_parent_loss:
        warnings.append(f"probe loss {loss['child']:.3f} is above the worse parent's {worse_parent_loss:.3f}")
    flagged = [row for row in layers if row["flagged"]]
    if flagged:
        described = ", ".join(f"{row['layer']} ({row['direction']})" for row in flagged[:6])
        warnings.append(f"{len(flagged)} of {len(layers)} layers leave the parents' block-influence band: {described}")
    if repetition["child"] > max(repetition["father"], repetition["mother"]) + settings.repetition_gap:
        warnings.append(f"generation repeats itself ({repetition['child']:.2f} repeated 3-grams, parents at most {max(repetition['father'], repetition['mother']):.2f})")

    verdict = "failed" if failures else "warning" if warnings else "healthy"
    return HealthReport(
        verdict=verdict,
        reasons=failures + warnings,
        layers=layers,
        families=families,
        loss=loss,
        repetition=repetition,
        nonfinite_tensors=nonfinite_tensors,
    )
