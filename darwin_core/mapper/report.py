"""The match report: how many father tensors found a partner, per component, before any weight is read."""

from dataclasses import asdict, dataclass, field

from ..errors import IncompatibleParentsError

SAMPLE_SIZE = 5


@dataclass
class ComponentMatch:
    """Father tensors of one component by outcome."""

    matched: int = 0
    shape_mismatched: int = 0
    unmatched: int = 0

    @property
    def total(self) -> int:
        return self.matched + self.shape_mismatched + self.unmatched


@dataclass
class ShapeMismatch:
    father_name: str
    father_shape: tuple[int, ...]
    mother_name: str
    mother_shape: tuple[int, ...]


@dataclass
class MatchReport:
    """Pairing of the father's tensors with the mother's (and the base's).

    `match_fraction` is the share of the counted father tensors that found a same-shape partner:
    every tensor, or only the FFN and router tensors in FFN crossbreed mode. Breeding stops when
    it is below `min_match`. Shape-mismatched and unmatched tensors are kept from the father.
    """

    father: str
    mother: str
    base: str | None
    father_family: str
    mother_family: str
    father_layers: int
    mother_layers: int
    layer_map: list[int] | None
    components: dict[str, ComponentMatch]
    compatibility_score: float
    min_match: float
    crossbreed: str | None
    counted: int
    counted_matched: int
    renamed: int = 0
    converted: int = 0
    split_or_joined: int = 0
    shape_mismatches: list[ShapeMismatch] = field(default_factory=list)
    unmatched_names: list[str] = field(default_factory=list)
    mother_unused: list[str] = field(default_factory=list)
    vocabulary: dict | None = None
    base_matched: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return sum(counts.matched for counts in self.components.values())

    @property
    def shape_mismatched(self) -> int:
        return sum(counts.shape_mismatched for counts in self.components.values())

    @property
    def unmatched(self) -> int:
        return sum(counts.unmatched for counts in self.components.values())

    @property
    def total(self) -> int:
        return sum(counts.total for counts in self.components.values())

    @property
    def match_fraction(self) -> float:
        return self.counted_matched / self.counted if self.counted else 0.0

    @property
    def passed(self) -> bool:
        return self.counted > 0 and self.match_fraction >= self.min_match

    @property
    def same_family(self) -> bool:
        return self.father_family == self.mother_family

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shape_mismatches"] = [
            {**asdict(item), "father_shape": list(item.father_shape), "mother_shape": list(item.mother_shape)}
            for item in self.shape_mismatches
        ]
        data.update(
            matched=self.matched,
            shape_mismatched=self.shape_mismatched,
            unmatched=self.unmatched,
            total=self.total,
            match_fraction=self.match_fraction,
            passed=self.passed,
            same_family=self.same_family,
        )
        return data

    def failure_message(self) -> str:
        """Build the message of `MatchError`: the fraction, the first problems by name and what to do."""
        scope = "FFN tensors" if self.crossbreed == "ffn" else "tensors"
        parts = [
            f"only {self.counted_matched} of {self.counted} father {scope} ({self.match_fraction:.0%}) pair with a "
            f"tensor of the mother, below min_match {self.min_match:.0%} (a {self.father_family} father and a "
            f"{self.mother_family} mother)"
        ]
        if self.shape_mismatches:
            first = self.shape_mismatches[0]
            more = self.shape_mismatched - 1
            renamed = f", as {first.mother_name}" if first.mother_name != first.father_name else ""
            parts.append(
                f"{first.father_name}: shape {tuple(first.father_shape)} in the father ({self.father}) but "
                f"{tuple(first.mother_shape)} in the mother ({self.mother}{renamed})"
                + (f", and {more} more tensors differ in shape" if more else "")
            )
        if self.unmatched_names:
            parts.append(f"{self.unmatched} father tensors have no counterpart, for example {', '.join(self.unmatched_names[:3])}")
        if self.mother_unused:
            parts.append(f"unused mother tensors include {', '.join(self.mother_unused[:3])}")
        advice = (
            "Pick parents that share more structure, lower min_match to breed anyway (unpaired tensors stay the "
            "father's), or breed in FFN crossbreed mode to blend only the FFNs."
        )
        if self.crossbreed == "ffn":
            advice = "The mother's FFNs do not fit the father's; pick a mother with the father's hidden and FFN sizes."
        return "; ".join(parts) + ". " + advice


class MatchError(IncompatibleParentsError):
    """Too few father tensors found a partner; `report` is the whole match report."""

    def __init__(self, report: MatchReport):
        super().__init__(report.failure_message())
        self.report = report
