"""Spherical linear interpolation of two flattened tensors."""

import math
from dataclasses import dataclass

import torch

# Above this |cos| the two directions are treated as parallel (or antiparallel), where the
# great-circle path is numerically unstable or undefined, and plain interpolation is used.
PARALLEL_THRESHOLD = 0.9995
ZERO_NORM = 1e-8


@dataclass(frozen=True)
class SlerpConfig:
    t: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.t <= 1.0:
            raise ValueError(f"slerp t must be in [0, 1], got {self.t}")


@dataclass(frozen=True)
class PairGeometry:
    """Norms of two tensors and their dot product: all SLERP needs besides t.

    They do not depend on t, so an evolution run computes them once per tensor pair.
    """

    norm_a: float
    norm_b: float
    dot: float

    @classmethod
    def of(cls, a: torch.Tensor, b: torch.Tensor, chunk_elements: int = 1 << 22) -> "PairGeometry":
        """Measure two tensors in float32 chunks, summed in float64, so a bf16 embedding never
        needs whole float32 copies."""
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        squares_a = squares_b = dot = 0.0
        for start in range(0, flat_a.numel(), chunk_elements):
            chunk_a = flat_a[start : start + chunk_elements].float()
            chunk_b = flat_b[start : start + chunk_elements].float()
            squares_a += float(torch.dot(chunk_a, chunk_a))
            squares_b += float(torch.dot(chunk_b, chunk_b))
            dot += float(torch.dot(chunk_a, chunk_b))
        return cls(math.sqrt(squares_a), math.sqrt(squares_b), dot)


def slerp_coefficients(geometry: PairGeometry, t: float) -> tuple[float, float]:
    """Weights (c_a, c_b) with slerp(a, b, t) = c_a * a + c_b * b.

    The angle comes from the normalised vectors and the weights apply to the originals, so norms
    interpolate too. Zero, parallel and antiparallel pairs fall back to linear interpolation.
    """
    if geometry.norm_a < ZERO_NORM or geometry.norm_b < ZERO_NORM:
        return 1.0 - t, t
    cosine = max(-1.0, min(1.0, geometry.dot / (geometry.norm_a * geometry.norm_b)))
    if abs(cosine) > PARALLEL_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(cosine)
    sin_theta = math.sin(theta)
    return math.sin((1.0 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, geometry: PairGeometry | None = None) -> torch.Tensor:
    """Interpolate from `a` (t = 0) to `b` (t = 1) along the arc between their directions.

    The result is finite for every input and equals `a` and `b` exactly at t = 0 and t = 1.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if t == 0.0:
        return a
    if t == 1.0:
        return b.to(a.dtype)
    coefficient_a, coefficient_b = slerp_coefficients(geometry or PairGeometry.of(a, b), t)
    # Math in float32 so bf16 and fp16 inputs keep their precision; cast back at the end.
    return torch.add(a.float() * coefficient_a, b.float(), alpha=coefficient_b).to(a.dtype)
