"""Builders for the Architecture Mapper tests: tiny models of every supported family, renamed
checkpoints, and conversions that give another family's layout the same function."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# Every family shares hidden 32 and FFN 64, so any two of them can pair their FFNs.
COMMON = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
MAMBA2 = {"mamba_n_heads": 4, "mamba_d_head": 8, "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_expand": 1, "mamba_chunk_size": 16}
FAMILIES: dict[str, dict] = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": {"head_dim": 8},
    "gemma": {"head_dim": 8},
    "gemma2": {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16},
    "gemma3_text": {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16},
    "phi3": {},
    "bamba": {"attn_layer_indices": [1], **MAMBA2},
    "jamba": {
        "attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1,
        "num_experts": 2, "num_experts_per_tok": 1, "mamba_d_state": 8, "mamba_dt_rank": 4, "mamba_expand": 1,
    },
    "falcon_h1": {"head_dim": 8, "mamba_n_heads": 4, "mamba_d_head": 8, "mamba_d_ssm": 32, "mamba_n_groups": 1,
                  "mamba_d_state": 8, "mamba_expand": 1, "mamba_chunk_size": 16},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"], "num_local_experts": 0, "shared_intermediate_size": 64, **MAMBA2},
    "qwen3_next": {
        "head_dim": 8, "layer_types": ["linear_attention", "full_attention"], "linear_num_value_heads": 4,
        "linear_num_key_heads": 2, "linear_key_head_dim": 8, "linear_value_head_dim": 8, "num_experts": 2,
        "num_experts_per_tok": 1, "moe_intermediate_size": 64, "shared_expert_intermediate_size": 64,
    },
}
TOKEN_IDS = torch.tensor([[1, 40, 41, 52, 60, 77, 33, 45, 70]])


def copy_tokenizer(source: Path, target: Path) -> None:
    for path in source.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(path, target / path.name)


def save_family_model(folder: Path, family: str, vocab_size: int, tokenizer_dir: Path, seed: int = 0, **overrides) -> Path:
    """Create a random float32 model of `family` with `save_pretrained` and copy a tokenizer beside it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, vocab_size=vocab_size, **{**COMMON, **FAMILIES[family], **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    copy_tokenizer(tokenizer_dir, folder)
    return folder


def rename_checkpoint(source: Path, target: Path, rename) -> Path:
    """Copy a model folder with every tensor renamed by `rename(name)`."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            save_file({rename(name): tensor for name, tensor in load_file(path).items()}, target / path.name, metadata={"format": "pt"})
        elif path.is_file():
            shutil.copy2(path, target / path.name)
    return target


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def logits(folder: Path, ids: torch.Tensor = TOKEN_IDS) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def _write(target: Path, tensors: dict[str, torch.Tensor], config: dict, tokenizer_from: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, target / "model.safetensors", metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer(tokenizer_from, target)
    return target


def gemma_as_llama(gemma: Path, target: Path) -> Path:
    """Rewrite a Gemma 1 checkpoint as an untied Llama with the same logits.

    Gemma multiplies embeddings by sqrt(hidden_size), reads the output layer from the unscaled
    embedding and computes RMSNorm as x * (1 + weight); Llama does none of that.
    """
    config = json.loads((gemma / "config.json").read_text())
    scale = config["hidden_size"] ** 0.5
    tensors = {}
    for name, tensor in load_file(gemma / "model.safetensors").items():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            tensors[name] = tensor + 1.0
        elif name == "model.embed_tokens.weight":
            tensors[name] = tensor * scale
            tensors["lm_head.weight"] = tensor.clone()
        else:
            tensors[name] = tensor
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "rms_norm_eps", "max_position_embeddings", "rope_parameters", "bos_token_id", "eos_token_id", "pad_token_id")
    llama = {key: config[key] for key in keys if key in config}
    llama.update(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act=config["hidden_act"], tie_word_embeddings=False)
    return _write(target, tensors, llama, gemma)


def llama_as_phi3(llama: Path, target: Path) -> Path:
    """Rewrite a Llama checkpoint as a Phi-3 with the same logits: q, k, v fused into qkv_proj
    and gate, up fused into gate_up_proj, gate rows first."""
    config = json.loads((llama / "config.json").read_text())
    source = load_file(llama / "model.safetensors")
    tensors = {}
    for name, tensor in source.items():
        if ".self_attn.q_proj." in name:
            prefix = name.split("self_attn.")[0]
            parts = [source[f"{prefix}self_attn.{kind}_proj.weight"] for kind in "qkv"]
            tensors[f"{prefix}self_attn.qkv_proj.weight"] = torch.cat(parts)
        elif ".mlp.gate_proj." in name:
            prefix = name.split("mlp.")[0]
            tensors[f"{prefix}mlp.gate_up_proj.weight"] = torch.cat([tensor, source[f"{prefix}mlp.up_proj.weight"]])
        elif not any(f".{kind}_proj." in name for kind in ("k", "v", "up")):
            tensors[name] = tensor
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "rms_norm_eps", "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")
    phi3 = {key: config[key] for key in keys}
    phi3.update(model_type="phi3", architectures=["Phi3ForCausalLM"], tie_word_embeddings=False, original_max_position_embeddings=64)
    return _write(target, tensors, phi3, llama)


def rescaled_copy(source: Path, target: Path, config_changes: dict, divisors: dict[str, float]) -> Path:
    """Copy a model folder with new multipliers in its config and every tensor whose name ends
    with a key of `divisors` divided by that value, so that both compute the same function."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            tensors = load_file(path)
            for name in tensors:
                for suffix, divisor in divisors.items():
                    if name.endswith(suffix):
                        tensors[name] = tensors[name] / divisor
            save_file(tensors, target / path.name, metadata={"format": "pt"})
        elif path.name == "config.json":
            path_config = json.loads(path.read_text())
            path_config.update(config_changes)
            (target / path.name).write_text(json.dumps(path_config, indent=2))
        elif path.is_file():
            shutil.copy2(path, target / path.name)
    return target
