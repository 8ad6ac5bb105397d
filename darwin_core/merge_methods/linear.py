"""Linear merge: a weighted sum of the parents' tensors (model soups)."""

from dataclasses import dataclass

import torch

from ._common import as_weights, broadcast_weights


@dataclass(frozen=True)
class LinearConfig:
    normalize: bool = True

    def __post_init__(self):
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be true or false, got {self.normalize!r}")


def linear(tensors: list[torch.Tensor], weights: list[float], normalize: bool = True) -> torch.Tensor:
    """Return sum_i w_i * t_i, divided by sum_i w_i when `normalize` is set."""
    if len(tensors) != len(weights):
        raise ValueError(f"linear merge got {len(tensors)} tensors but {len(weights)} weights")
    if len(tensors) == 1 and weights[0] == 1.0:
        return tensors[0]

    # Math in float32 so bf16 and fp16 parents lose no precision in the sum; cast back at the end.
    stacked = torch.stack([tensor.float() for tensor in tensors])
    weight = as_weights(weights, stacked)
    merged = (broadcast_weights(weight, stacked) * stacked).sum(dim=0)
    if normalize:
        total = weight.sum()
        if total.abs() < 1e-12:
            raise ValueError(f"linear merge weights {list(weights)} sum to zero; give weights with a non-zero sum")
        merged = merged / total
    return merged.to(tensors[0].dtype)
