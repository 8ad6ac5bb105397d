"""Builders for the small real checkpoints the tests merge: random Llama models saved as
safetensors with a real character-level tokenizer, in a few milliseconds each."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def build_char_tokenizer(folder: Path, extra_tokens: list[str] | None = None):
    """Save a character-level `PreTrainedTokenizerFast` (printable ASCII) into `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIAL_TOKENS + [chr(code) for code in range(32, 127)] + ["\n"] + list(extra_tokens or [])
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def llama_config(vocab_size: int, layers: int = 2, hidden: int = 32, ffn: int = 64, tie: bool = False, **overrides) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": tie,
    }
    config.update(overrides)
    return config


def save_model(folder: Path, config: dict, seed: int, dtype: torch.dtype = torch.float32, tokenizer_from: Path | None = None,
               shards: int = 1) -> Path:
    """Create a random model from `config`, save it as safetensors (optionally sharded) with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    state = {name: tensor.detach().to(dtype).contiguous() for name, tensor in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(state)
    if shards == 1:
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        weight_map = {}
        size = (len(names) + shards - 1) // shards
        for index in range(shards):
            file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
            part = {name: state[name] for name in names[index * size : (index + 1) * size]}
            save_file(part, folder / file_name, metadata={"format": "pt"})
            weight_map.update({name: file_name for name in part})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    saved_config = dict(config)
    saved_config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(saved_config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
    if tokenizer_from is not None:
        for path in tokenizer_from.iterdir():
            (folder / path.name).write_bytes(path.read_bytes())
    return folder


def perturbed_copy(source: Path, target: Path, seed: int, scale: float = 0.01) -> Path:
    """Copy a model folder with small seeded noise added to every float tensor (a fake fine-tune)."""
    from safetensors.torch import load_file

    target.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            tensors = load_file(path)
            noisy = {
                name: (tensor.float() + scale * torch.randn(tensor.shape, generator=generator)).to(tensor.dtype)
                for name, tensor in tensors.items()
            }
            save_file(noisy, target / path.name, metadata={"format": "pt"})
        else:
            (target / path.name).write_bytes(path.read_bytes())
    return target
