"""Spherical linear interpolation of two flattened tensors."""

import math
from dataclasses import dataclass

import torch

# Above this |cos| the two directions are treated as parallel (or antiparallel), where the
# great-circle path is numerically unstable or undefined, and plain interpolation is used.
PARALLEL_THRESHOLD = 0.9995


@dataclass(frozen=True)
class SlerpConfig:
    t: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.t <= 1.0:
            raise ValueError(f"slerp t must be in [0, 1], got {self.t}")


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-8) -> torch.Tensor:
    """Interpolate from `a` (t = 0) to `b` (t = 1) along the arc between their directions.

    The angle comes from the normalised vectors and the coefficients are applied to the
    originals, so norms interpolate too. Zero, parallel and antiparallel inputs fall back to
    linear interpolation, so the result is finite for every input and reaches `a` and `b`
    exactly at t = 0 and t = 1.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if t == 0.0:
        return a
    if t == 1.0:
        return b.to(a.dtype)

    a32, b32 = a.float(), b.float()
    norm_a, norm_b = a32.norm(), b32.norm()
    if norm_a < eps or norm_b < eps:
        return torch.lerp(a32, b32, t).to(a.dtype)
    cosine = float(torch.dot((a32 / norm_a).reshape(-1), (b32 / norm_b).reshape(-1)).clamp(-1.0, 1.0))
    if abs(cosine) > PARALLEL_THRESHOLD:
        return torch.lerp(a32, b32, t).to(a.dtype)

    theta = math.acos(cosine)
    sin_theta = math.sin(theta)
    coefficient_a = math.sin((1.0 - t) * theta) / sin_theta
    coefficient_b = math.sin(t * theta) / sin_theta
    return (coefficient_a * a32 + coefficient_b * b32).to(a.dtype)
