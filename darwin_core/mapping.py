"""Partners of the father's tensors in the mother and the base.

The child always has the father's tensor names, shapes and config. For parents of one layout,
every partner is the tensor of the same name (`identity_mapping`). The Architecture Mapper
(`darwin_core.mapper`) builds richer mappings for parents of different families, depths or
vocabularies: partners under other names, partners cut from or joined into fused tensors,
values converted between family conventions, vocabulary rows reordered by token string, and
father tensors kept whole because they have no partner.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .compat import CompatibilityReport, require_compatible
from .plan import Action


@dataclass
class RowMap:
    """Vocabulary alignment of an embedding-like tensor: row i of the father's tensor pairs with
    row `source[i]` of the partner, or keeps the father's row where `source[i]` is -1."""

    source: list[int]

    def apply(self, partner: torch.Tensor, father: torch.Tensor) -> torch.Tensor:
        index = torch.tensor(self.source, dtype=torch.long)
        aligned = father.clone()
        present = index >= 0
        aligned[present] = partner[index[present]].to(father.dtype)
        return aligned


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of one partner tensor (every row when `rows` is None), read as
    `stored * scale + offset` so that its values follow the father family's convention.

    A converted piece is float32 whatever the partner's dtype."""

    name: str
    rows: tuple[int, int] | None = None
    scale: float = 1.0
    offset: float = 0.0

    def read(self, read_tensor: Callable[[str], torch.Tensor]) -> torch.Tensor:
        tensor = read_tensor(self.name)
        if self.rows is not None:
            tensor = tensor[self.rows[0] : self.rows[1]]
        if self.scale != 1.0 or self.offset != 0.0:
            # The converted values stay in float32; the merge casts its result to the father's dtype.
            tensor = tensor.float() * self.scale + self.offset
        return tensor


@dataclass
class Partner:
    """The partner of one father tensor: its pieces concatenated along dim 0, then its
    vocabulary rows aligned to the father's when `rows` is set."""

    pieces: tuple[Piece, ...]
    rows: RowMap | None = None

    @classmethod
    def whole(cls, name: str) -> "Partner":
        return cls((Piece(name),))

    @property
    def name(self) -> str:
        """The partner tensor's name, or the names of its pieces joined by `+`."""
        return "+".join(dict.fromkeys(piece.name for piece in self.pieces))

    def assemble(self, read_tensor: Callable[[str], torch.Tensor], father_tensor: torch.Tensor) -> torch.Tensor:
        parts = [piece.read(read_tensor) for piece in self.pieces]
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if self.rows is not None:
            tensor = self.rows.apply(tensor, father_tensor)
        return tensor


@dataclass
class TensorMapping:
    """Partners of the father's tensors; `forced` lists tensors copied from the father, with the reason.

    `report` is the `CompatibilityReport` of same-layout parents or the mapper's `MatchReport`.
    `layer_map[l]` is the mother layer paired with father layer l, or None for equal depths.
    """

    mother: dict[str, Partner]
    base: dict[str, Partner] = field(default_factory=dict)
    forced: dict[str, tuple[Action, str]] = field(default_factory=dict)
    report: object = None
    layer_map: list[int] | None = None

    @property
    def mother_names(self) -> dict[str, str]:
        """Father tensor name to the name of its partner in the mother."""
        return {name: partner.name for name, partner in self.mother.items()}

    @property
    def base_names(self) -> dict[str, str]:
        return {name: partner.name for name, partner in self.base.items()}

    def partner(self, checkpoint, father_name: str, father_tensor: torch.Tensor, which: str = "mother") -> torch.Tensor | None:
        """Read the partner of one father tensor, aligned to the father's shape, or None if it has none.

        A partner cut from a fused tensor reads that whole tensor once per father tensor it feeds.
        """
        partner = (self.mother if which == "mother" else self.base).get(father_name)
        if partner is None:
            return None
        return partner.assemble(checkpoint.get, father_tensor)

    def aligned(self, tensors: dict[str, torch.Tensor], father: dict[str, torch.Tensor], which: str = "mother") -> dict[str, torch.Tensor]:
        """Partners of every father tensor from tensors held in memory, keyed by father name.

        Father tensors without a partner pair with themselves, which a transplant ignores.
        """
        partners = self.mother if which == "mother" else self.base
        aligned = {}
        for father_name, father_tensor in father.items():
            partner = partners.get(father_name)
            aligned[father_name] = father_tensor if partner is None else partner.assemble(tensors.__getitem__, father_tensor)
        return aligned


def identity_mapping(report: CompatibilityReport, father, base=None) -> TensorMapping:
    """Same-layout parents: every tensor pairs with the tensor of the same name."""
    require_compatible(report)
    partners = {name: Partner.whole(name) for name in father.checkpoint.tensors}
    return TensorMapping(mother=partners, base=dict(partners) if base is not None else {}, report=report)
