"""DARE (Yu et al. 2023): randomly drop task-vector entries and rescale the survivors.

`dare_ties` follows the drop with TIES sign election and disjoint merge; `dare_linear` sums the
rescaled task vectors. The drop masks come from explicit generators, one per model.
"""

from dataclasses import dataclass

import torch

from ._common import as_weights, broadcast_weights
from .ties import disjoint_merge


@dataclass(frozen=True)
class DareConfig:
    density: float = 1.0
    normalize: bool = False

    def __post_init__(self):
        if not 0.0 <= self.density <= 1.0:
            raise ValueError(f"DARE density must be in [0, 1], got {self.density}")


def drop_and_rescale(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability `density` and divide the kept ones by `density`.

    Density 1 returns the delta unchanged and density 0 a zero delta, without drawing a mask.
    """
    if density >= 1.0:
        return delta
    if density <= 0.0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) < density
    return delta * keep / density


def dare_ties(
    base: torch.Tensor,
    deltas: torch.Tensor,
    weights: list[float],
    densities: list[float],
    generators: list[torch.Generator],
    normalize: bool = False,
) -> torch.Tensor:
    """Merge stacked task vectors (n, ...) onto `base`: drop and rescale, elect sign, disjoint merge."""
    dropped = torch.stack([drop_and_rescale(delta.float(), density, generator) for delta, density, generator in zip(deltas, densities, generators)])

    weight = as_weights(weights, dropped)
    weighted = broadcast_weights(weight, dropped) * dropped
    merged = disjoint_merge(weighted, weight, normalize)

    return (base.float() + merged).to(base.dtype)


def dare_linear(
    base: torch.Tensor,
    deltas: torch.Tensor,
    weights: list[float],
    densities: list[float],
    generators: list[torch.Generator],
) -> torch.Tensor:
    """Return base + sum_i w_i * DARE(delta_i)."""
    dropped = torch.stack([drop_and_rescale(delta.float(), density, generator) for delta, density, generator in zip(deltas, densities, generators)])
    weight = as_weights(weights, dropped)
    merged = (broadcast_weights(weight, dropped) * dropped).sum(dim=0)
    return (base.float() + merged).to(base.dtype)
