"""Tensor inventory: the canonical slot (component, layer) and depth block of every tensor.

The inventory is built from tensor names and shapes in the safetensors headers only; no model
class is loaded. Layers are grouped into 6 depth blocks, block(l) = floor(6 * l / L).
"""

import re
from dataclasses import dataclass
from enum import Enum

from .checkpoint import TensorInfo

NUM_BLOCKS = 6


class Component(str, Enum):
    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"
    ATTENTION = "attention"
    MIXER = "mixer"
    FFN = "ffn"
    ROUTER = "router"
    NORM = "norm"
    OTHER = "other"


COMPONENTS: tuple[str, ...] = tuple(component.value for component in Component)

_LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|decoder_layers)\.(\d+)\.")

# First matching rule wins, so specific patterns (routers inside `mlp.`) come before general ones.
# `post_attention_layernorm` is the norm in front of the MLP in Llama-style blocks, so it is
# part of the FFN; `component_of` moves it to attention in the families where it follows attention.
_RULES: tuple[tuple[re.Pattern, Component], ...] = tuple(
    (re.compile(pattern), component)
    for pattern, component in (
        (r"(^|\.)(embed_tokens|wte|word_embeddings|embeddings|tok_embeddings)\.", Component.EMBEDDING),
        (r"(^|\.)lm_head\.weight$|^(output|embed_out)\.weight$", Component.LM_HEAD),
        (r"\.(mlp|block_sparse_moe|feed_forward|moe)\.(gate|router)\.(weight|bias|e_score_correction_bias)$", Component.ROUTER),
        (r"\.(shared_expert_gate|router)\.", Component.ROUTER),
        (r"\.(mamba|mixer|linear_attn|ssm|conv1d|mamba_mixer)\.", Component.MIXER),
        (r"\.(A_log|D|dt_bias|dt_proj)(\.|$)", Component.MIXER),
        (r"\.(self_attn|attention|attn|self_attention|cross_attn)\.", Component.ATTENTION),
        (r"\.(input_layernorm|ln_1|attention_norm|pre_attention_layernorm)\.", Component.ATTENTION),
        (r"\.(mlp|shared_mlp|block_sparse_moe|feed_forward|moe|experts|shared_expert|ffn)\.", Component.FFN),
        (r"\.(post_attention_layernorm|pre_feedforward_layernorm|post_feedforward_layernorm|pre_ff_layernorm|ln_2|ffn_norm)\.", Component.FFN),
        (r"(norm|ln_f|layernorm)[^.]*\.(weight|bias)$", Component.NORM),
    )
)


@dataclass(frozen=True)
class Slot:
    """Canonical place of a tensor: its component, its layer (None for layer-less tensors) and block."""

    name: str
    component: Component
    layer: int | None
    block: int | None
    shape: tuple[int, ...]


def layer_of(name: str) -> int | None:
    match = _LAYER_PATTERN.search(name)
    return int(match.group(1)) if match else None


# Gemma 2 and 3 normalise the attention output with `post_attention_layernorm` and the FFN input
# with `pre_feedforward_layernorm`, so there the first belongs to attention.
_POST_ATTENTION_NORM_FAMILIES = frozenset({"gemma2", "gemma3", "gemma3_text"})
_POST_ATTENTION_NORM = re.compile(r"\.post_attention_layernorm\.")


def component_of(name: str, model_type: str | None = None) -> Component:
    if model_type in _POST_ATTENTION_NORM_FAMILIES and _POST_ATTENTION_NORM.search(name):
        return Component.ATTENTION
    for pattern, component in _RULES:
        if pattern.search(name):
            return component
    return Component.OTHER


def block_of(layer: int, num_layers: int) -> int:
    """Depth block of a layer: floor(6 * l / L), so L not divisible by 6 gives uneven blocks."""
    return (NUM_BLOCKS * layer) // num_layers


def proportional_layer_map(num_layers: int, partner_layers: int) -> list[int]:
    """Partner layer of each of `num_layers` layers when depths differ: the partner layer whose
    span contains the layer's relative midpoint, floor((l + 0.5) * P / L). Equal depths map l to l."""
    if partner_layers <= 0:
        return []
    # Integer form of the same floor, so no rounding error moves a layer across a boundary.
    return [min(partner_layers - 1, (2 * layer + 1) * partner_layers // (2 * num_layers)) for layer in range(num_layers)]


def count_layers(names: list[str], config: dict | None = None) -> int:
    """Layer count from the config when present, else one more than the largest layer index seen."""
    configured = (config or {}).get("num_hidden_layers") or (config or {}).get("text_config", {}).get("num_hidden_layers")
    if configured:
        return int(configured)
    layers = [layer for layer in map(layer_of, names) if layer is not None]
    return max(layers) + 1 if layers else 0


def build_inventory(tensors: dict[str, TensorInfo], config: dict | None = None) -> dict[str, Slot]:
    """Classify every tensor of a checkpoint, in name order."""
    names = sorted(tensors)
    num_layers = count_layers(names, config)
    config = config or {}
    model_type = (config.get("text_config") or {}).get("model_type") or config.get("model_type")
    inventory = {}
    for name in names:
        layer = layer_of(name)
        block = block_of(layer, num_layers) if layer is not None and num_layers else None
        inventory[name] = Slot(name, component_of(name, model_type), layer, block, tensors[name].shape)
    return inventory
