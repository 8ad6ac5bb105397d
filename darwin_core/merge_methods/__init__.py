"""Merge methods: one module per method, each a pure tensor function and a frozen config.

`FIXED_METHODS` maps the fixed-recipe method names (one global ratio, comparable with mergekit)
to their configs; the Darwin operator blends DARE-TIES and SLERP per tensor.
"""

from ..choices import FIXED_METHODS, MERGE_METHODS, MergeMethod
from .dare import DareConfig, dare_linear, dare_ties, drop_and_rescale
from .darwin import DarwinConfig, darwin_dare_ties, darwin_merge
from .linear import LinearConfig, linear
from .slerp import PairGeometry, SlerpConfig, slerp, slerp_coefficients
from .task_arithmetic import TaskArithmeticConfig, task_arithmetic
from .ties import TiesConfig, disjoint_merge, elect_sign, kth_largest, magnitude_trim, ties

METHOD_CONFIGS = {
    "darwin": DarwinConfig,
    "linear": LinearConfig,
    "slerp": SlerpConfig,
    "task_arithmetic": TaskArithmeticConfig,
    "ties": TiesConfig,
    "dare_ties": DareConfig,
    "dare_linear": DareConfig,
}


def check_method(name: str) -> str:
    if name not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {name!r}; supported: {', '.join(MERGE_METHODS)}")
    return name


__all__ = [
    "MERGE_METHODS", "FIXED_METHODS", "METHOD_CONFIGS", "MergeMethod", "check_method",
    "DareConfig", "DarwinConfig", "LinearConfig", "SlerpConfig", "TaskArithmeticConfig", "TiesConfig",
    "dare_linear", "dare_ties", "darwin_dare_ties", "darwin_merge", "disjoint_merge", "drop_and_rescale",
    "elect_sign", "kth_largest", "linear", "magnitude_trim", "slerp", "slerp_coefficients", "task_arithmetic", "ties", "PairGeometry",
]
