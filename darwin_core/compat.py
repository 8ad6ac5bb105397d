"""Compatibility report of two parents, from their configs and safetensors headers only.

The score is 0.5 * type + 0.3 * dimension + 0.2 * parameter-count agreement, where type is 1
for the same `model_type`, dimension is the mean of min/max over layers, hidden size, FFN size
and vocabulary, and parameter count is min/max of the two counts.
"""

import math
from dataclasses import asdict, dataclass, field

from .errors import IncompatibleParentsError


def _text_config(config: dict) -> dict:
    """The language model's config: nested `text_config` for wrapped multimodal checkpoints."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


@dataclass(frozen=True)
class ParentSummary:
    ref: str
    model_type: str
    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    parameter_count: int
    total_bytes: int
    dtypes: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(ref: str, config: dict, shapes: dict[str, tuple[str, tuple[int, ...]]]) -> ParentSummary:
    """Summarise a parent from its config and a map of tensor name to (dtype name, shape)."""
    text = _text_config(config)
    element_bytes = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "F32": 4, "F16": 2, "BF16": 2, "F64": 8}
    return ParentSummary(
        ref=ref,
        model_type=str(text.get("model_type", "unknown")),
        architecture=",".join(config.get("architectures") or ["unknown"]),
        num_layers=int(text.get("num_hidden_layers") or 0),
        hidden_size=int(text.get("hidden_size") or 0),
        intermediate_size=int(text.get("intermediate_size") or 0),
        vocab_size=int(text.get("vocab_size") or 0),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        parameter_count=sum(math.prod(shape) for _, shape in shapes.values()),
        total_bytes=sum(math.prod(shape) * element_bytes.get(dtype, 4) for dtype, shape in shapes.values()),
        dtypes=tuple(sorted({dtype for dtype, _ in shapes.values()})),
    )


def summarize_parent(parent) -> ParentSummary:
    shapes = {name: (str(info.dtype).removeprefix("torch."), info.shape) for name, info in parent.checkpoint.tensors.items()}
    return summarize(parent.ref, parent.config, shapes)


def _ratio(a: float, b: float) -> float:
    if a == b:
        return 1.0
    return min(a, b) / max(a, b) if max(a, b) > 0 else 0.0


@dataclass
class CompatibilityReport:
    father: ParentSummary
    mother: ParentSummary
    base: ParentSummary | None
    same_family: bool
    score: float
    matched: int
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    only_father: list[str] = field(default_factory=list)
    only_mother: list[str] = field(default_factory=list)
    base_problems: list[str] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        """True when every father tensor has a same-shape partner in the mother (and the base)."""
        return not self.shape_mismatched and not self.only_father and not self.only_mother and not self.base_problems

    def to_dict(self) -> dict:
        return {
            "father": self.father.to_dict(),
            "mother": self.mother.to_dict(),
            "base": self.base.to_dict() if self.base else None,
            "same_family": self.same_family,
            "score": self.score,
            "compatible": self.compatible,
            "matched": self.matched,
            "shape_mismatched": [[name, list(a), list(b)] for name, a, b in self.shape_mismatched],
            "only_father": self.only_father,
            "only_mother": self.only_mother,
            "base_problems": self.base_problems,
        }


def compare_shapes(
    father: ParentSummary,
    mother: ParentSummary,
    father_shapes: dict[str, tuple[int, ...]],
    mother_shapes: dict[str, tuple[int, ...]],
    base: ParentSummary | None = None,
    base_shapes: dict[str, tuple[int, ...]] | None = None,
) -> CompatibilityReport:
    """Pair tensors by name and build the report; nothing is read beyond names and shapes."""
    shape_mismatched = [
        (name, father_shapes[name], mother_shapes[name])
        for name in sorted(father_shapes)
        if name in mother_shapes and tuple(father_shapes[name]) != tuple(mother_shapes[name])
    ]
    only_father = sorted(set(father_shapes) - set(mother_shapes))
    only_mother = sorted(set(mother_shapes) - set(father_shapes))
    matched = len(set(father_shapes) & set(mother_shapes)) - len(shape_mismatched)

    base_problems = []
    if base_shapes is not None:
        for name in sorted(father_shapes):
            if name not in base_shapes:
                base_problems.append(f"{name} is missing in the base")
            elif tuple(base_shapes[name]) != tuple(father_shapes[name]):
                base_problems.append(f"{name}: shape {tuple(base_shapes[name])} in the base but {tuple(father_shapes[name])} in the father")

    same_family = father.model_type == mother.model_type
    dimension = sum(
        _ratio(getattr(father, key), getattr(mother, key)) for key in ("num_layers", "hidden_size", "intermediate_size", "vocab_size")
    ) / 4.0
    score = 0.5 * float(same_family) + 0.3 * dimension + 0.2 * _ratio(father.parameter_count, mother.parameter_count)
    return CompatibilityReport(
        father=father,
        mother=mother,
        base=base,
        same_family=same_family,
        score=round(score, 4),
        matched=matched,
        shape_mismatched=shape_mismatched,
        only_father=only_father,
        only_mother=only_mother,
        base_problems=base_problems,
    )


def check_parents(father, mother, base=None) -> CompatibilityReport:
    """Build the compatibility report of resolved parents from their headers."""

    def shapes(parent):
        return {name: info.shape for name, info in parent.checkpoint.tensors.items()}

    return compare_shapes(
        summarize_parent(father),
        summarize_parent(mother),
        shapes(father),
        shapes(mother),
        summarize_parent(base) if base else None,
        shapes(base) if base else None,
    )


def require_compatible(report: CompatibilityReport) -> None:
    """Raise `IncompatibleParentsError` naming the first tensor that cannot be paired."""
    if report.shape_mismatched:
        name, shape_a, shape_b = report.shape_mismatched[0]
        more = len(report.shape_mismatched) - 1
        raise IncompatibleParentsError(
            f"{name}: shape {tuple(shape_a)} in the father ({report.father.ref}) but {tuple(shape_b)} in the mother "
            f"({report.mother.ref})" + (f", and {more} more tensors differ" if more else "")
            + ". Parents of different sizes cannot be merged tensor by tensor; pick two fine-tunes of the same base model."
        )
    if report.only_father or report.only_mother:
        side, names, other = ("father", report.only_father, "mother") if report.only_father else ("mother", report.only_mother, "father")
        raise IncompatibleParentsError(
            f"{len(names)} tensors of the {side} have no counterpart in the {other}, for example {', '.join(names[:3])}. "
            f"The parents are {report.father.model_type} and {report.mother.model_type} checkpoints with different layouts; "
            "pick two fine-tunes of the same base model."
        )
    if report.base_problems:
        raise IncompatibleParentsError(
            f"the base ({report.base.ref if report.base else '?'}) does not match the parents: {report.base_problems[0]}"
            + (f" (and {len(report.base_problems) - 1} more)" if len(report.base_problems) > 1 else "")
            + ". Use the common ancestor both parents were fine-tuned from, or breed without a base."
        )
