"""Closed-form value tests for every merge operator."""

import math

import pytest
import torch
from torch.testing import assert_close

from darwin_core.merge_methods import (
    DareConfig,
    DarwinConfig,
    TiesConfig,
    dare_linear,
    dare_ties,
    darwin_dare_ties,
    darwin_merge,
    drop_and_rescale,
    elect_sign,
    linear,
    kth_largest,
    magnitude_trim,
    slerp,
    task_arithmetic,
    ties,
)
from darwin_core.merge_methods._common import seeded_generator, tensor_seed


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- linear and task arithmetic -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
def test_linear_weights_06_04(dtype):
    a = torch.tensor([[1.0, 2.0], [3.0, -4.0]], dtype=dtype)
    b = torch.tensor([[-1.0, 0.5], [2.0, 8.0]], dtype=dtype)
    merged = linear([a, b], [0.6, 0.4])
    assert merged.dtype == dtype
    assert_close(merged.float(), 0.6 * a.float() + 0.4 * b.float(), atol=1e-2 if dtype != torch.float32 else 1e-6, rtol=0)


def test_linear_normalizes_weights():
    a, b = torch.ones(3), torch.full((3,), 4.0)
    assert_close(linear([a, b], [3.0, 1.0]), torch.full((3,), 1.75))
    assert_close(linear([a, b], [3.0, 1.0], normalize=False), torch.full((3,), 7.0))


def test_linear_zero_weight_sum_rejected():
    with pytest.raises(ValueError, match="sum to zero"):
        linear([torch.ones(2), torch.ones(2)], [1.0, -1.0])


def test_task_arithmetic_value():
    base = torch.tensor([1.0, 1.0, 1.0])
    deltas = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 2.0]])
    assert_close(task_arithmetic(base, deltas, [0.5, 0.25]), torch.tensor([1.5, 1.5, 1.0]))


def test_fp16_sum_does_not_overflow():
    # 60000 is near the fp16 maximum (65504): the sum of both would overflow in fp16 arithmetic.
    a = torch.full((4,), 60000.0, dtype=torch.float16)
    b = torch.full((4,), 60000.0, dtype=torch.float16)
    merged = linear([a, b], [1.0, 1.0])
    assert merged.dtype == torch.float16
    assert torch.isfinite(merged).all()
    assert_close(merged.float(), torch.full((4,), 60000.0), atol=32.0, rtol=0)


# --- TIES -------------------------------------------------------------------------------------


def test_magnitude_trim_keeps_largest():
    delta = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2, 1.0])
    assert_close(magnitude_trim(delta, 0.5), torch.tensor([0.0, -3.0, 0.0, 2.0, 0.0, 1.0]))
    assert_close(magnitude_trim(delta, 1.0), delta)
    assert_close(magnitude_trim(delta, 0.0), torch.zeros(6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kth_largest_matches_sort(dtype):
    # Repeated magnitudes included: the threshold is the k-th entry of the sorted values.
    values = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 0.5, 2.0, 4.0], dtype=dtype)
    ranked = sorted(values.float().tolist(), reverse=True)
    for k in range(1, values.numel() + 1):
        assert kth_largest(values.clone(), k) == ranked[k - 1]


def test_magnitude_trim_keeps_threshold_ties():
    # Keeping 2 of 5 where the 2nd and 3rd largest magnitudes tie: both survive.
    delta = torch.tensor([1.0, -2.0, 2.0, 3.0, 0.5])
    assert_close(magnitude_trim(delta, 0.4), torch.tensor([0.0, -2.0, 2.0, 3.0, 0.0]))


def test_ties_hand_built_2x3_known_signs():
    base = torch.zeros(2, 3)
    # Two task vectors of shape (2, 3). Entry by entry, the weighted sum elects the sign:
    #   [0,0]: +1 and +3 agree        -> both kept
    #   [0,1]: +2 and -1 -> sum +1    -> only +2 kept
    #   [0,2]: -2 and +1 -> sum -1    -> only -2 kept
    #   [1,0]: -1 and -1 agree        -> both kept
    #   [1,1]: +1 and -3 -> sum -2    -> only -3 kept
    #   [1,2]:  0 and +2              -> only +2 kept
    deltas = torch.tensor([
        [[1.0, 2.0, -2.0], [-1.0, 1.0, 0.0]],
        [[3.0, -1.0, 1.0], [-1.0, -3.0, 2.0]],
    ])
    weights = [0.5, 0.5]
    expected_sum = torch.tensor([[0.5 + 1.5, 1.0, -1.0], [-0.5 - 0.5, -1.5, 1.0]])
    assert_close(ties(base, deltas, weights, density=1.0), expected_sum)

    # normalize divides by the weights of the agreeing models at each entry.
    expected_mean = torch.tensor([[2.0, 2.0, -2.0], [-1.0, -3.0, 2.0]])
    assert_close(ties(base, deltas, weights, density=1.0, normalize=True), expected_mean)


def test_ties_trim_then_elect():
    base = torch.ones(4)
    deltas = torch.tensor([[4.0, -0.1, 0.2, -3.0], [-1.0, 0.3, 5.0, 0.1]])
    # density 0.5 keeps [4, -3] of the first and [-1, 5] of the second task vector.
    # Weighted by 1: entry 0 sum 3 -> keep 4; entry 2 -> 5; entry 3 -> -3.
    assert_close(ties(base, deltas, [1.0, 1.0], density=0.5), torch.tensor([5.0, 1.0, 6.0, -2.0]))


def test_elect_sign_zero_sum_is_positive():
    weighted = torch.tensor([[1.0, -1.0], [-1.0, -2.0]])
    assert_close(elect_sign(weighted), torch.tensor([1.0, -1.0]))


def test_ties_config_rejects_density():
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\], got 1.3"):
        TiesConfig(density=1.3)


# --- DARE -------------------------------------------------------------------------------------


def test_dare_density_zero_gives_zero_delta():
    delta = torch.randn(16, 8, generator=generator(1))
    assert_close(drop_and_rescale(delta, 0.0, generator()), torch.zeros_like(delta))
    base = torch.randn(16, 8, generator=generator(2))
    merged = dare_ties(base, torch.stack([delta, -delta]), [0.5, 0.5], [0.0, 0.0], [generator(), generator()])
    assert_close(merged, base)


def test_dare_density_one_no_pruning():
    delta = torch.randn(16, 8, generator=generator(1))
    assert drop_and_rescale(delta, 1.0, generator()) is delta
    base = torch.zeros(16, 8)
    deltas = torch.stack([delta, 2 * delta])
    merged = dare_linear(base, deltas, [0.5, 0.25], [1.0, 1.0], [generator(), generator()])
    assert_close(merged, task_arithmetic(base, deltas, [0.5, 0.25]))


def test_dare_rescales_survivors():
    delta = torch.full((1000,), 2.0)
    dropped = drop_and_rescale(delta, 0.25, generator(3))
    kept = dropped[dropped != 0]
    assert_close(kept, torch.full_like(kept, 8.0))
    assert 150 < kept.numel() < 350  # about a quarter kept


def test_dare_mask_reproducible_per_seed():
    delta = torch.randn(64, generator=generator(4))
    first = drop_and_rescale(delta, 0.5, seeded_generator(7, "model.layers.0.mlp.up_proj.weight", "b"))
    again = drop_and_rescale(delta, 0.5, seeded_generator(7, "model.layers.0.mlp.up_proj.weight", "b"))
    other = drop_and_rescale(delta, 0.5, seeded_generator(7, "model.layers.1.mlp.up_proj.weight", "b"))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_tensor_seed_is_stable():
    # Fixed value: must not change across processes or Python hash seeds.
    assert tensor_seed(0, "lm_head.weight", "a") == tensor_seed(0, "lm_head.weight", "a")
    assert tensor_seed(0, "lm_head.weight", "a") != tensor_seed(1, "lm_head.weight", "a")
    assert 0 <= tensor_seed(123, "x") < 2**63


def test_dare_config_rejects_density():
    with pytest.raises(ValueError, match=r"DARE density must be in \[0, 1\], got -0.1"):
        DareConfig(density=-0.1)


# --- SLERP ------------------------------------------------------------------------------------


def test_slerp_orthogonal_midpoint():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    half = math.sqrt(0.5)
    assert_close(slerp(a, b, 0.5), torch.tensor([half, half]))


def test_slerp_endpoints():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, 0.5, 2.0])
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)


@pytest.mark.parametrize(
    "a, b",
    [
        (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])),
        (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])),
        (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, -2.0, -3.0])),
        (torch.zeros(3), torch.tensor([1.0, 2.0, 3.0])),
        (torch.zeros(3), torch.zeros(3)),
    ],
    ids=["identical", "parallel", "antiparallel", "one-zero", "both-zero"],
)
def test_slerp_degenerate_inputs_finite_and_continuous(a, b):
    steps = torch.linspace(0, 1, 201)
    values = torch.stack([slerp(a, b, float(t)) for t in steps])
    assert torch.isfinite(values).all()
    jumps = (values[1:] - values[:-1]).norm(dim=-1)
    assert float(jumps.max()) <= (a - b).norm() / 200 * 1.01 + 1e-6
    assert_close(values[0], a)
    assert_close(values[-1], b)


def test_slerp_identical_returns_input():
    a = torch.randn(5, 7, generator=generator(5))
    assert_close(slerp(a, a.clone(), 0.3), a)


def test_slerp_bf16_in_bf16_out():
    a = torch.randn(8, generator=generator(6)).bfloat16()
    b = torch.randn(8, generator=generator(7)).bfloat16()
    assert slerp(a, b, 0.4).dtype == torch.bfloat16


# --- Darwin operator --------------------------------------------------------------------------


def test_darwin_dare_ties_father_base_is_linear():
    a = torch.randn(6, 4, generator=generator(8))
    b = torch.randn(6, 4, generator=generator(9))
    merged = darwin_dare_ties(a, b, None, 0.3, 1.0, 1.0, generator(), generator())
    assert_close(merged, a + 0.3 * (b - a))


def test_darwin_dare_ties_with_base():
    base = torch.zeros(3)
    a = torch.tensor([1.0, -1.0, 2.0])
    b = torch.tensor([3.0, 1.0, -4.0])
    # weighted: (1-r)=0.5 * a, r=0.5 * b -> [0.5, -0.5, 1.0] and [1.5, 0.5, -2.0]
    # sums [2, 0, -1] elect [+, +, -]: keep [0.5+1.5, 0.5, -2.0]
    merged = darwin_dare_ties(a, b, base, 0.5, 1.0, 1.0, generator(), generator())
    assert_close(merged, torch.tensor([2.0, 0.5, -2.0]))


@pytest.mark.parametrize("method_weight", [0.0, 0.5, 1.0], ids=["dare-ties", "blend", "slerp"])
def test_darwin_merge_blend(method_weight):
    a = torch.randn(10, generator=generator(10))
    b = torch.randn(10, generator=generator(11))
    config = DarwinConfig(ratio=0.4, method_weight=method_weight)
    merged = darwin_merge(a, b, None, config, generator(), generator())
    expected = (1 - method_weight) * (a + 0.4 * (b - a)) + method_weight * slerp(a, b, 0.4)
    assert_close(merged, expected)


def test_darwin_merge_self_is_identity():
    a = torch.randn(4, 5, generator=generator(12))
    config = DarwinConfig(ratio=0.7, density_a=0.3, density_b=0.6, method_weight=0.5)
    assert_close(darwin_merge(a, a.clone(), None, config, generator(1), generator(2)), a)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_darwin_merge_keeps_dtype(dtype):
    a = torch.randn(8, generator=generator(13)).to(dtype)
    b = torch.randn(8, generator=generator(14)).to(dtype)
    merged = darwin_merge(a, b, None, DarwinConfig(ratio=0.5, density_b=0.5), generator(), generator())
    assert merged.dtype == dtype


def test_darwin_config_rejects_ratio():
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\], got 1.5"):
        DarwinConfig(ratio=1.5)


# --- plan entries through merge_tensor --------------------------------------------------------


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties", "dare_linear"])
@pytest.mark.parametrize("normalize", [False, True], ids=["sum", "normalized"])
def test_father_based_path_matches_general_operator(method, normalize):
    """With no base, the fast path equals the general operator with the father as explicit base."""
    from darwin_core.merge import merge_tensor
    from darwin_core.plan import Action, PlanSettings, TensorPlan

    if method == "task_arithmetic" and normalize:
        pytest.skip("task arithmetic normalizes by the weight sum, which is 1 for two parents")
    father = torch.randn(32, 16, generator=generator(20))
    mother = father + 0.1 * torch.randn(32, 16, generator=generator(21))
    entry = TensorPlan("w", "ffn", 0, 0, 0.3, None, 0.3, Action.BLEND, 0.6, 0.6, 0.0)
    settings = PlanSettings(method=method, normalize=normalize)
    fast = merge_tensor(entry, father, mother, None, method, 5, settings)
    general = merge_tensor(entry, father, mother, father.clone(), method, 5, settings)
    assert_close(fast, general)


def test_linear_fast_path_value():
    from darwin_core.merge import merge_tensor
    from darwin_core.plan import Action, TensorPlan

    a = torch.randn(8, generator=generator(22))
    b = torch.randn(8, generator=generator(23))
    entry = TensorPlan("w", "ffn", 0, 0, 0.4, None, 0.4, Action.BLEND, 1.0, 1.0, 0.0)
    assert_close(merge_tensor(entry, a, b, None, "linear", 0), 0.6 * a + 0.4 * b)


@pytest.mark.parametrize("method", ["darwin", "linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_chunked_merge_is_bit_identical(method, dtype, monkeypatch):
    """Merging a large tensor chunk by chunk gives exactly the bits of merging it whole."""
    import darwin_core.merge as merge_module
    from darwin_core.merge import merge_tensor
    from darwin_core.plan import Action, PlanSettings, TensorPlan

    father = torch.randn(300, 70, generator=generator(30)).to(dtype)
    mother = (father.float() + 0.05 * torch.randn(300, 70, generator=generator(31))).to(dtype)
    entry = TensorPlan("model.embed_tokens.weight", "embedding", None, None, 0.4, 0.5, 0.4, Action.BLEND, 0.7, 0.6, 0.3)
    settings = PlanSettings(method=method)
    whole = merge_tensor(entry, father, mother, None, method, 9, settings)
    monkeypatch.setattr(merge_module, "CHUNK_ELEMENTS", 1024)
    chunked = merge_tensor(entry, father, mother, None, method, 9, settings)
    assert chunked.dtype == dtype
    assert torch.equal(whole, chunked)

