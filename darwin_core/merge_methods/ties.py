"""TIES merging (Yadav et al. 2023): trim, elect sign, disjoint merge."""

from dataclasses import dataclass

import torch

from ._common import as_weights, broadcast_weights


@dataclass(frozen=True)
class TiesConfig:
    density: float = 1.0
    normalize: bool = False

    def __post_init__(self):
        if not 0.0 <= self.density <= 1.0:
            raise ValueError(f"ties density must be in [0, 1], got {self.density}")


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest magnitude and zero the rest."""
    if density >= 1.0:
        return delta
    keep = int(density * delta.numel())
    if keep == 0:
        return torch.zeros_like(delta)
    threshold = kth_largest(delta.abs().reshape(-1), keep)
    return delta * (delta.abs() >= threshold)


def kth_largest(values: torch.Tensor, k: int) -> float:
    """Return the k-th largest entry of a flat tensor, which this function may reorder in place.

    numpy's partition selects without a full sort and, on x86, with SIMD: about 0.5 ms for the
    885k entries of a SmolLM2 projection, against 9.5 ms for `torch.kthvalue`, which dominated
    a TIES breed. Both return the same entry, so trimming keeps the same entries.
    """
    if values.dtype in (torch.bfloat16, torch.float16):
        values = values.float()  # exact; numpy has no bfloat16
    array = values.numpy()
    index = array.size - k
    array.partition(index)
    return float(array[index])


def elect_sign(weighted: torch.Tensor) -> torch.Tensor:
    """Sign of the summed weighted deltas per entry; a zero sum elects +1 (as mergekit does)."""
    return torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0)


def disjoint_merge(weighted: torch.Tensor, weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Sum the weighted entries that agree with the elected sign.

    Entries that disagree are dropped, not averaged in. With weights that sum to 1 this is the
    weighted mean of the agreeing entries over all models; `normalize` instead divides by the
    weights of the models that agree at each entry, which is the unweighted TIES mean.
    """
    agree = weighted.sign() == elect_sign(weighted)
    merged = (weighted * agree).sum(dim=0)
    if normalize:
        agreeing_weight = (broadcast_weights(weights, weighted) * agree).sum(dim=0)
        merged = merged / agreeing_weight.clamp(min=1e-12)
    return merged


def ties(base: torch.Tensor, deltas: torch.Tensor, weights: list[float], density: float = 1.0, normalize: bool = False) -> torch.Tensor:
    """Merge stacked task vectors `deltas` (n, ...) onto `base` with TIES."""
    # Trim: keep each task vector's largest entries.
    trimmed = torch.stack([magnitude_trim(delta.float(), density) for delta in deltas])

    # Weight, elect the sign per entry and merge the agreeing entries.
    weight = as_weights(weights, trimmed)
    weighted = broadcast_weights(weight, trimmed) * trimmed
    merged = disjoint_merge(weighted, weight, normalize)

    return (base.float() + merged).to(base.dtype)
