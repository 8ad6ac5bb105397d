"""Family rules: the canonical slot of every tensor, and what a stored value means in each family.

A canonical slot is a (key, layer) pair shared by all families, for example
("attn.q.weight", 3) for Llama's `model.layers.3.self_attn.q_proj.weight` and for the query rows
of Phi-3's fused `model.layers.3.self_attn.qkv_proj.weight`, or ("ffn.gate.weight", 3) for both
Llama's `mlp.gate_proj` and Bamba's `feed_forward.gate_proj`. Slots come from tensor names and
shapes plus a few config fields, never from loading a model class.

Families also store some weights under other conventions. Every value is converted to one
reference convention (Llama's) before two families are paired: effective = stored * scale + offset.
"""

import math
import re
from dataclasses import dataclass

# Wrapped checkpoints (multimodal models, older conversions) nest the text model under another
# prefix; after these rewrites their text tensors carry the plain causal-LM names.
PREFIX_REMAPS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^model\.language_model\."), "model."),
    (re.compile(r"^language_model\.model\."), "model."),
    (re.compile(r"^language_model\.lm_head\."), "lm_head."),
    # Checkpoints saved from the bare decoder class (no `model.` prefix).
    (re.compile(r"^(?=(?:layers\.\d+|embed_tokens|norm)\.)"), "model."),
)

# model_type values (of the config, or of its `text_config` for wrapped checkpoints) with
# dedicated rules below. Other model types are paired by their Llama-style names alone.
TRANSFORMER_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3")
HYBRID_FAMILIES = ("bamba", "jamba", "falcon_h1", "granitemoehybrid", "qwen3_next")
KNOWN_FAMILIES = TRANSFORMER_FAMILIES + HYBRID_FAMILIES

# Gemma 2 and 3 use `post_attention_layernorm` on the attention output and
# `pre_feedforward_layernorm` in front of the FFN; every other family here uses the first in
# front of the FFN.
_POST_MIXER_NORM_FAMILIES = frozenset({"gemma2", "gemma3", "gemma3_text"})
# RMSNorm computed as x * (1 + weight): the stored weight is the offset from 1.
_OFFSET_NORM_FAMILIES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "qwen3_next"})
# Embeddings multiplied by sqrt(hidden_size) in the forward pass.
_SCALED_EMBEDDING_FAMILIES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_TOP_LEVEL = {
    "model.embed_tokens.weight": "embed.weight",
    "lm_head.weight": "lm_head.weight",
    "model.norm.weight": "norm.final.weight",
    "model.final_layernorm.weight": "norm.final.weight",
}
_FFN_MODULE = r"(?:mlp|feed_forward|shared_mlp|block_sparse_moe)"
# (pattern on the name inside a layer, key template); the first match wins.
_LAYER_RULES: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(pattern), key)
    for pattern, key in (
        (r"^(?:self_attn|attention)\.([qkvo])_proj\.(weight|bias)$", "attn.{0}.{1}"),
        (r"^self_attn\.([qk])_norm\.weight$", "attn.{0}_norm.weight"),
        (rf"^{_FFN_MODULE}\.(gate|up|down)_proj\.(weight|bias)$", "ffn.{0}.{1}"),
        (r"^shared_mlp\.output_linear\.weight$", "ffn.down.weight"),
        (rf"^{_FFN_MODULE}\.(?:gate|router)\.weight$", "router.weight"),
        (r"^input_layernorm\.weight$", "norm.pre_mixer.weight"),
        (r"^(?:pre_feedforward_layernorm|pre_ff_layernorm)\.weight$", "norm.pre_ffn.weight"),
        (r"^post_feedforward_layernorm\.weight$", "norm.post_ffn.weight"),
        (r"^(mamba|linear_attn)\.(.+)$", "mixer.{0}.{1}"),
        (rf"^{_FFN_MODULE}\.(.+)$", "ffn.{0}"),
    )
)
_FUSED_QKV = re.compile(r"^self_attn\.qkv_proj\.weight$")
_FUSED_GATE_UP = re.compile(rf"^(?:{_FFN_MODULE}\.gate_up_proj|shared_mlp\.input_linear)\.weight$")


@dataclass(frozen=True)
class CanonicalPart:
    """The rows [start, stop) of a tensor (all rows when `rows` is None) that fill one canonical slot."""

    key: str
    layer: int | None
    rows: tuple[int, int] | None
    shape: tuple[int, ...]

    @property
    def role(self) -> str:
        """The slot without its parameter kind, e.g. "ffn.down" for "ffn.down.weight"."""
        return self.key.rsplit(".", 1)[0]


def text_config(config: dict) -> dict:
    """Return the language model's config: a wrapped checkpoint's `text_config` over the top-level fields."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else dict(config)


def family_of(config: dict) -> str:
    return str(text_config(config).get("model_type") or "unknown")


def remove_wrapper_prefix(name: str) -> str:
    for pattern, replacement in PREFIX_REMAPS:
        name = pattern.sub(replacement, name, count=1)
    return name


def canonical_parts(name: str, shape: tuple[int, ...], config: dict) -> list[CanonicalPart]:
    """Return the canonical slots one tensor fills: one part, or several for a fused tensor.

    A tensor outside the known slots keeps its own name (after the prefix rewrites) as its key,
    so such tensors still pair with the same name in a parent of another family.
    """
    shape = tuple(shape)
    plain = remove_wrapper_prefix(name)
    if plain in _TOP_LEVEL:
        return [CanonicalPart(_TOP_LEVEL[plain], None, None, shape)]
    match = _LAYER.match(plain)
    if match is None:
        return [CanonicalPart(f"tensor:{plain}", None, None, shape)]

    layer, inner = int(match.group(1)), match.group(2)
    if inner == "post_attention_layernorm.weight":
        key = "norm.post_mixer.weight" if family_of(config) in _POST_MIXER_NORM_FAMILIES else "norm.pre_ffn.weight"
        return [CanonicalPart(key, layer, None, shape)]
    if _FUSED_QKV.match(inner):
        fused = _split_qkv(shape, text_config(config), layer)
        if fused:
            return fused
    if _FUSED_GATE_UP.match(inner) and len(shape) == 2 and shape[0] % 2 == 0:
        # Both Phi-3's gate_up_proj and Granite's input_linear put the gate rows first.
        half = shape[0] // 2
        return [
            CanonicalPart("ffn.gate.weight", layer, (0, half), (half, *shape[1:])),
            CanonicalPart("ffn.up.weight", layer, (half, shape[0]), (half, *shape[1:])),
        ]
    for pattern, template in _LAYER_RULES:
        rule_match = pattern.match(inner)
        if rule_match:
            return [CanonicalPart(template.format(*rule_match.groups()), layer, None, shape)]
    return [CanonicalPart(f"layer:{inner}", layer, None, shape)]


def _split_qkv(shape: tuple[int, ...], config: dict, layer: int) -> list[CanonicalPart] | None:
    """Query, key and value rows of a fused qkv projection, or None when the config does not add up."""
    heads = config.get("num_attention_heads")
    if not heads or len(shape) != 2 or not (config.get("head_dim") or config.get("hidden_size")):
        return None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    q_rows, kv_rows = heads * head_dim, kv_heads * head_dim
    if q_rows + 2 * kv_rows != shape[0]:
        return None
    bounds = (("q", 0, q_rows), ("k", q_rows, q_rows + kv_rows), ("v", q_rows + kv_rows, shape[0]))
    return [CanonicalPart(f"attn.{kind}.weight", layer, (start, stop), (stop - start, shape[1])) for kind, start, stop in bounds]


def value_convention(part: CanonicalPart, config: dict) -> tuple[float, float]:
    """(scale, offset) with effective = stored * scale + offset for this part in this family.

    Covered: Gemma's sqrt(hidden_size) embedding scale, the 1 + weight RMSNorm of Gemma and
    Qwen3-Next, and the embedding, logit, FFN and residual multipliers of Granite and Falcon-H1.
    """
    text = text_config(config)
    family = family_of(config)
    role = part.role
    kind = part.key.rsplit(".", 1)[-1]
    scale, offset = 1.0, 0.0

    if kind == "weight" and family in _OFFSET_NORM_FAMILIES and (role.startswith("norm.") or role in ("attn.q_norm", "attn.k_norm")):
        offset = 1.0
    if role == "embed" and family in _SCALED_EMBEDDING_FAMILIES:
        scale = math.sqrt(text["hidden_size"])
    if family in ("granite", "granitemoe", "granitemoehybrid"):
        if role == "embed":
            scale = float(text.get("embedding_multiplier", 1.0))
        elif role == "lm_head":
            scale = 1.0 / float(text.get("logits_scaling", 1.0))
        elif role in ("attn.o", "ffn.down", "mixer.mamba.out_proj"):
            # Every block output is multiplied by residual_multiplier before the residual add.
            scale = float(text.get("residual_multiplier", 1.0))
    if family == "falcon_h1":
        gate_multiplier, down_multiplier = text.get("mlp_multipliers") or (1.0, 1.0)
        scale = {
            "embed": float(text.get("embedding_multiplier", 1.0)),
            "lm_head": float(text.get("lm_head_multiplier", 1.0)),
            "ffn.gate": float(gate_multiplier),
            "ffn.down": float(down_multiplier),
            "attn.o": float(text.get("attention_out_multiplier", 1.0)),
        }.get(role, 1.0)
    return scale, offset


# Config fields that change what the paired weights compute. A difference is reported, and the
# child keeps the father's value, as it keeps every config field.
CONVENTION_FIELDS = (
    "hidden_act",
    "hidden_activation",
    "head_dim",
    "query_pre_attn_scalar",
    "attention_multiplier",
    "key_multiplier",
    "attention_in_multiplier",
    "rms_norm_eps",
)


def rope_settings(config: dict) -> dict:
    """Rotary embedding settings in one dict, from transformers 5's `rope_parameters` or the older
    top-level `rope_theta`, `rope_scaling` and `partial_rotary_factor` fields."""
    text = text_config(config)
    settings = dict(text.get("rope_parameters") or {})
    if "rope_theta" in text:
        settings.setdefault("rope_theta", text["rope_theta"])
    if "partial_rotary_factor" in text:
        settings.setdefault("partial_rotary_factor", text["partial_rotary_factor"])
    settings.update(text.get("rope_scaling") or {})
    return settings
