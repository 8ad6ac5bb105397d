"""Apply a merge plan to one tensor; the streaming and the in-memory breed both call this.

Randomness (DARE masks) comes from generators seeded by the run seed and the tensor name, so
the same plan, parents and seed give bit-identical tensors in either path and in any order.
"""

import torch

from .merge_methods import (
    DarwinConfig,
    PairGeometry,
    dare_linear,
    dare_ties,
    darwin_merge,
    linear,
    slerp,
    task_arithmetic,
    ties,
)
from .merge_methods._common import seeded_generator
from .plan import Action, PlanSettings, TensorPlan


def merge_tensor(
    entry: TensorPlan,
    father: torch.Tensor,
    mother: torch.Tensor | None,
    base: torch.Tensor | None,
    method: str,
    seed: int,
    settings: PlanSettings = PlanSettings(),
    geometry: PairGeometry | None = None,
) -> torch.Tensor:
    """Return the child's tensor for one plan entry, in the father's dtype.

    `mother` may be None only for a tensor the plan copies from the father. `geometry` (the
    norms and dot product of father and mother) may be passed in when it is cached.
    """
    if entry.action is Action.TRANSPLANT_A or not father.is_floating_point():
        return father
    if mother is None:
        raise ValueError(f"{entry.name}: the mother has no partner tensor, so it can only be copied from the father")
    if entry.action is Action.TRANSPLANT_B:
        return mother.to(father.dtype)

    ratio = entry.r_final
    generator_a = seeded_generator(seed, entry.name, "a")
    generator_b = seeded_generator(seed, entry.name, "b")
    if method == "darwin":
        config = DarwinConfig(ratio, entry.density_a, entry.density_b, entry.method_weight)
        return darwin_merge(father, mother, base, config, generator_a, generator_b, geometry)
    if method == "linear":
        return linear([father, mother.to(father.dtype)], [1.0 - ratio, ratio], normalize=True)
    if method == "slerp":
        return slerp(father, mother.to(father.dtype), ratio, geometry)

    # Task-vector methods: the base is the explicit base model, else the father.
    anchor = father if base is None else base.to(father.dtype)
    deltas = torch.stack([father.float() - anchor.float(), mother.float() - anchor.float()])
    weights = [1.0 - ratio, ratio]
    if method == "task_arithmetic":
        merged = task_arithmetic(anchor, deltas, weights, normalize=settings.normalize)
    elif method == "ties":
        merged = ties(anchor, deltas, weights, density=entry.density_a, normalize=settings.normalize)
    elif method == "dare_ties":
        merged = dare_ties(anchor, deltas, weights, [entry.density_a, entry.density_b], [generator_a, generator_b], settings.normalize)
    elif method == "dare_linear":
        merged = dare_linear(anchor, deltas, weights, [entry.density_a, entry.density_b], [generator_a, generator_b])
    else:
        raise ValueError(f"unknown merge method {method!r}")
    return merged.to(father.dtype)
