"""Task arithmetic: add weighted task vectors (fine-tuned minus base) to the base."""

from dataclasses import dataclass

import torch

from ._common import as_weights, broadcast_weights


@dataclass(frozen=True)
class TaskArithmeticConfig:
    normalize: bool = False


def task_arithmetic(base: torch.Tensor, deltas: torch.Tensor, weights: list[float], normalize: bool = False) -> torch.Tensor:
    """Return base + sum_i w_i * delta_i for stacked `deltas` of shape (n, ...)."""
    weight = as_weights(weights, deltas)
    merged = (broadcast_weights(weight, deltas) * deltas.float()).sum(dim=0)
    if normalize:
        total = weight.sum()
        if total.abs() < 1e-12:
            raise ValueError(f"task arithmetic weights {list(weights)} sum to zero; give weights with a non-zero sum")
        merged = merged / total
    return (base.float() + merged).to(base.dtype)
