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
    drop_and_rescale,
    linear,
    magnitude_trim,
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
        if father.dtype == torch.float32:
            # Two weights that sum to one: the weighted sum is an interpolation, done in one pass.
            return torch.lerp(father, mother.to(torch.float32), ratio)
        return linear([father, mother.to(father.dtype)], [1.0 - ratio, ratio], normalize=True)
    if method == "slerp":
        return slerp(father, mother.to(father.dtype), ratio, geometry)
    if base is None:
        return _father_based_task_vector(entry, father, mother, method, settings.normalize, generator_b)

    # Task-vector methods around an explicit base model.
    anchor = base.to(father.dtype)
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


def _father_based_task_vector(
    entry: TensorPlan, father: torch.Tensor, mother: torch.Tensor, method: str, normalize: bool, generator_b: torch.Generator
) -> torch.Tensor:
    """Task-vector methods with the father as base, without stacking a zero task vector.

    The father's task vector is zero, so TIES sign election keeps exactly the nonzero entries of
    the mother's weighted task vector r * dB; the result is A + r * prune(dB), or A + prune(dB)
    when `normalize` divides by the agreeing weight r (TIES and DARE-TIES). This is the general
    operator with base = father, computed with one task-vector buffer.
    """
    ratio = entry.r_final
    delta = mother.float() - father.float()
    if method == "ties":
        delta = magnitude_trim(delta, entry.density_a)
    elif method in ("dare_ties", "dare_linear"):
        delta = drop_and_rescale(delta, entry.density_b, generator_b)
    elif method != "task_arithmetic":
        raise ValueError(f"unknown merge method {method!r}")
    scale = 1.0 if normalize and method in ("ties", "dare_ties") and ratio > 0 else ratio
    return torch.add(father.float(), delta, alpha=scale).to(father.dtype)
