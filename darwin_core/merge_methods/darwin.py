"""The Darwin operator: a blend of DARE-TIES and SLERP between father A and mother B at ratio r.

    DARE-TIES: base = the explicit base model, else the father. Task vectors dA = A - base and
               dB = B - base are dropped with keep probabilities density_a and density_b and
               rescaled by 1/density; TIES elects the sign over the weighted vectors (1-r)*dA
               and r*dB and sums the agreeing entries. With the father as base this is
               A + r * DARE(B - A).
    SLERP:     slerp(A, B, r) over the flattened tensors.
    child    = (1 - m) * DARE-TIES + m * SLERP
"""

from dataclasses import dataclass

import torch

from .dare import drop_and_rescale
from .slerp import PairGeometry, slerp, slerp_coefficients
from .ties import disjoint_merge


@dataclass(frozen=True)
class DarwinConfig:
    ratio: float
    density_a: float = 1.0
    density_b: float = 1.0
    method_weight: float = 0.5

    def __post_init__(self):
        for name in ("ratio", "density_a", "density_b", "method_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


def darwin_dare_ties(
    father: torch.Tensor,
    mother: torch.Tensor,
    base: torch.Tensor | None,
    ratio: float,
    density_a: float,
    density_b: float,
    generator_a: torch.Generator,
    generator_b: torch.Generator,
) -> torch.Tensor:
    """DARE-TIES of father and mother around `base` (the father when None), in float32."""
    anchor = father.float() if base is None else base.float()
    delta_a = father.float() - anchor
    delta_b = mother.float() - anchor

    # Drop and rescale each task vector (the father's is zero when it is the base).
    dropped = torch.stack([
        drop_and_rescale(delta_a, density_a, generator_a),
        drop_and_rescale(delta_b, density_b, generator_b),
    ])

    # Weight by (1 - r, r), elect the sign per entry, sum the agreeing entries.
    weights = torch.tensor([1.0 - ratio, ratio], dtype=torch.float32)
    weighted = dropped * weights.reshape(2, *([1] * delta_a.dim()))
    return anchor + disjoint_merge(weighted, weights, normalize=False)


def _father_based_merge(
    father: torch.Tensor,
    mother: torch.Tensor,
    config: DarwinConfig,
    generator_b: torch.Generator,
    geometry: PairGeometry | None,
) -> torch.Tensor:
    """The operator with the father as base, in two or three passes over memory.

    With dA = 0, TIES keeps exactly the entries of r * DARE(dB), so DARE-TIES is
    A + (r / density_b) * mask * (B - A), and SLERP is c_a * A + c_b * B. The blend is then
    alpha * A + beta * B plus the masked correction, with scalar alpha and beta.
    """
    r, m, density = config.ratio, config.method_weight, config.density_b
    c_a, c_b = slerp_coefficients(geometry or PairGeometry.of(father, mother), r) if m > 0.0 else (0.0, 0.0)
    a32, b32 = father.float(), mother.float()

    if density >= 1.0 or r == 0.0 or m >= 1.0:
        # No dropout: the DARE-TIES part is A + r * (B - A), a linear combination as well.
        alpha = (1.0 - m) * (1.0 - r) + m * c_a
        beta = (1.0 - m) * r + m * c_b
        return torch.add(a32 * alpha, b32, alpha=beta)

    merged = torch.add(a32 * ((1.0 - m) + m * c_a), b32, alpha=m * c_b)
    if density > 0.0:
        delta = b32 - a32
        keep = torch.rand(delta.shape, generator=generator_b, dtype=torch.float32) < density
        merged.add_(delta.mul_(keep), alpha=(1.0 - m) * r / density)
    return merged


def darwin_merge(
    father: torch.Tensor,
    mother: torch.Tensor,
    base: torch.Tensor | None,
    config: DarwinConfig,
    generator_a: torch.Generator,
    generator_b: torch.Generator,
    geometry: PairGeometry | None = None,
) -> torch.Tensor:
    """Blend DARE-TIES and SLERP of one tensor; the result has the father's dtype.

    `geometry` (norms and dot product of father and mother) may be given to skip recomputing it.
    """
    if base is None:
        return _father_based_merge(father, mother, config, generator_b, geometry).to(father.dtype)

    m = config.method_weight
    dare_part = None if m >= 1.0 else darwin_dare_ties(
        father, mother, base, config.ratio, config.density_a, config.density_b, generator_a, generator_b
    )
    slerp_part = None if m <= 0.0 else slerp(father.float(), mother.float(), config.ratio, geometry)
    if dare_part is None:
        merged = slerp_part
    elif slerp_part is None:
        merged = dare_part
    else:
        merged = (1.0 - m) * dare_part + m * slerp_part
    return merged.to(father.dtype)
