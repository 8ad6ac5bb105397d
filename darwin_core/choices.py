"""Option sets shared by the engine, the CLI and the studio, importable without torch.

The same tuple feeds argparse `choices=`, Gradio `choices=` and the engine's dispatchers, so the
three cannot drift apart.
"""

from typing import Literal, get_args

MergeMethod = Literal["darwin", "linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"]
MERGE_METHODS: tuple[str, ...] = get_args(MergeMethod)
FIXED_METHODS: tuple[str, ...] = tuple(name for name in MERGE_METHODS if name != "darwin")

Split = Literal["search", "test"]
SPLITS: tuple[str, ...] = get_args(Split)

PRESET_NAMES: tuple[str, ...] = ("balanced", "father-heavy", "mother-heavy", "ffn-from-mother", "published-4b")

# Cross-family breeding modes of the Architecture Mapper.
CROSSBREED_MODES: tuple[str, ...] = ("ffn",)
