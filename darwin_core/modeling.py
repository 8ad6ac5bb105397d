"""Loading causal LMs from folders or from in-memory tensors, and finding their decoder layers."""

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(folder: str | Path, dtype: torch.dtype = torch.float32):
    """Load a causal LM and its tokenizer from a model folder; float32 by default for CPU math."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model.eval()
    return model, load_tokenizer(folder)


def model_from_tensors(config: dict, tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32):
    """Build a causal LM from a config dict and a full state dict without touching the disk.

    Tied weights are re-tied, so a state dict without `lm_head.weight` is complete for models
    that tie their embeddings; any other missing or unexpected tensor raises `ValueError`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
    load_tensors_into(model, tensors)
    model.eval()
    return model


def load_tensors_into(model, tensors: dict[str, torch.Tensor]) -> None:
    """Copy tensors into a model's parameters in place (the evolution loop reuses one model)."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if getattr(model.config, "tie_word_embeddings", False):
        missing = [name for name in missing if name != "lm_head.weight"]
    if unexpected:
        raise ValueError(f"tensors not used by {model.config.model_type} models: {', '.join(unexpected[:5])}")
    if missing:
        raise ValueError(f"missing tensors for this {model.config.model_type} model: {', '.join(missing[:5])}")


def decoder_layers(model) -> torch.nn.ModuleList:
    """Return the model's list of decoder layers: the longest ModuleList of whole layers."""
    expected = getattr(model.config, "num_hidden_layers", None)
    best = None
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            if expected is not None and len(module) == expected:
                return module
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return best
