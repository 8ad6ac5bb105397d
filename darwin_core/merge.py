"""Apply a merge plan to one tensor; the streaming and the in-memory breed both call this.

Randomness (DARE masks) comes from generators seeded by the run seed and the tensor name, so
the same plan, parents and seed give bit-identical tensors in either path and in any order.

Large tensors (the embedding and lm_head of a real model) are merged in chunks of
`CHUNK_ELEMENTS` when the operator works entry by entry once its scalars are known: the float32
temporaries then stay a few tens of MB whatever the tensor size. Chunking gives the same bits:
each entry's arithmetic is unchanged, and torch's CPU generator yields the same random stream
whether a mask is drawn at once or chunk by chunk in order.
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
    kth_largest,
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
    if method == "linear" and father.dtype in (torch.float32, torch.bfloat16, torch.float16):
        # Two weights that sum to one: the weighted sum is an interpolation. torch.lerp computes
        # reduced-precision inputs in float32 and rounds once, like the float32 path.
        return _chunked(father, mother, lambda a, b: torch.lerp(a, b.to(a.dtype), ratio))
    if method == "linear":
        return linear([father, mother.to(father.dtype)], [1.0 - ratio, ratio], normalize=True)
    if method in ("darwin", "slerp") and geometry is None and (method == "slerp" or base is None):
        geometry = PairGeometry.of(father, mother)
    if method == "darwin":
        config = DarwinConfig(ratio, entry.density_a, entry.density_b, entry.method_weight)
        if base is None:
            return _chunked(father, mother, lambda a, b: darwin_merge(a, b, None, config, generator_a, generator_b, geometry))
        return darwin_merge(father, mother, base, config, generator_a, generator_b, geometry)
    if method == "slerp":
        return _chunked(father, mother, lambda a, b: slerp(a, b.to(a.dtype), ratio, geometry))
    if base is None:
        if method == "ties":
            return _father_based_ties(entry, father, mother, settings.normalize)
        return _chunked(
            father, mother, lambda a, b: _father_based_task_vector(entry, a, b, method, settings.normalize, generator_b)
        )

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


CHUNK_ELEMENTS = 1 << 22  # 4M entries: 16 MB per float32 temporary; a multiple of 16 for the generator


def _father_based_ties(entry: TensorPlan, father: torch.Tensor, mother: torch.Tensor, normalize: bool) -> torch.Tensor:
    """TIES with the father as base; a large tensor is trimmed without whole float32 task vectors.

    Trimming keeps the entries of |B - A| at or above the k-th largest value, a threshold that
    needs every magnitude at once. For a large tensor the magnitudes are gathered chunk by chunk
    into one float32 buffer and the threshold is selected in place (numpy's partition, no
    copy); the merge then runs chunk by chunk. The threshold equals the one `magnitude_trim`
    finds, so the result has the same bits.
    """
    if father.numel() <= CHUNK_ELEMENTS or entry.density_a >= 1.0:
        return _chunked(father, mother, lambda a, b: _father_based_task_vector(entry, a, b, "ties", normalize, None))
    count = father.numel()
    keep = int(entry.density_a * count)
    if keep == 0:
        return father.clone()
    flat_father, flat_mother = father.reshape(-1), mother.reshape(-1)
    magnitudes = torch.empty(count, dtype=torch.float32)
    for start in range(0, count, CHUNK_ELEMENTS):
        window = slice(start, start + CHUNK_ELEMENTS)
        magnitudes[window] = (flat_mother[window].float() - flat_father[window].float()).abs()
    threshold = kth_largest(magnitudes, keep)
    del magnitudes

    scale = 1.0 if normalize and entry.r_final > 0 else entry.r_final

    def trimmed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        delta = b.float() - a.float()
        delta = delta * (delta.abs() >= threshold)
        return torch.add(a.float(), delta, alpha=scale).to(a.dtype)

    return _chunked(father, mother, trimmed)


def _chunked(father: torch.Tensor, mother: torch.Tensor, merge) -> torch.Tensor:
    """Apply an entry-by-entry `merge(father_chunk, mother_chunk)` in order over flat chunks."""
    if father.numel() <= CHUNK_ELEMENTS:
        return merge(father, mother)
    out = torch.empty(father.shape, dtype=father.dtype)
    flat_out, flat_father, flat_mother = out.view(-1), father.reshape(-1), mother.reshape(-1)
    for start in range(0, flat_father.numel(), CHUNK_ELEMENTS):
        window = slice(start, start + CHUNK_ELEMENTS)
        flat_out[window] = merge(flat_father[window], flat_mother[window])
    return out
