"""How each father tensor finds its partner in the mother and the base.

The child always has the father's tensor names, shapes and config. For parents of one layout,
every partner has the father's name (`identity_mapping`). The Architecture Mapper builds richer
mappings for parents of different families, depths or vocabularies: renamed partners, father
tensors kept whole because they have no partner, and vocabulary rows reordered by token string.
"""

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


@dataclass
class TensorMapping:
    """Partners of the father's tensors; `forced` lists tensors copied from the father, with the reason."""

    mother_names: dict[str, str]
    base_names: dict[str, str] = field(default_factory=dict)
    forced: dict[str, tuple[Action, str]] = field(default_factory=dict)
    mother_rows: dict[str, RowMap] = field(default_factory=dict)
    base_rows: dict[str, RowMap] = field(default_factory=dict)
    report: object = None

    def partner(self, checkpoint, father_name: str, father_tensor: torch.Tensor, which: str = "mother") -> torch.Tensor | None:
        """Read the partner of one father tensor, aligned to the father's shape, or None if it has none."""
        names = self.mother_names if which == "mother" else self.base_names
        rows = self.mother_rows if which == "mother" else self.base_rows
        name = names.get(father_name)
        if name is None:
            return None
        tensor = checkpoint.get(name)
        if father_name in rows:
            tensor = rows[father_name].apply(tensor, father_tensor)
        return tensor

    def aligned(self, tensors: dict[str, torch.Tensor], father: dict[str, torch.Tensor], which: str = "mother") -> dict[str, torch.Tensor]:
        """Partners of every father tensor from tensors held in memory, keyed by father name.

        Father tensors without a partner pair with themselves, which a transplant ignores.
        """
        names = self.mother_names if which == "mother" else self.base_names
        rows = self.mother_rows if which == "mother" else self.base_rows
        aligned = {}
        for father_name, father_tensor in father.items():
            name = names.get(father_name)
            if name is None:
                aligned[father_name] = father_tensor
                continue
            tensor = tensors[name]
            if father_name in rows:
                tensor = rows[father_name].apply(tensor, father_tensor)
            aligned[father_name] = tensor
        return aligned


def identity_mapping(report: CompatibilityReport, father, base=None) -> TensorMapping:
    """Same-layout parents: every tensor pairs with the tensor of the same name."""
    require_compatible(report)
    names = {name: name for name in father.checkpoint.tensors}
    return TensorMapping(mother_names=names, base_names=dict(names) if base is not None else {}, report=report)
