"""Probe texts and the per-layer block influence they measure.

A probe family is a text file of passages separated by blank lines (`assets/probes/*.txt`, or
any folder the user passes). Block influence of layer l on a family is
1 - mean cos(h_in, h_out) over the family's tokens, where h_in and h_out are the residual
stream entering and leaving the layer: a layer that barely changes the stream scores near 0.
This is the layer-importance measure of ShortGPT (Men et al. 2024, arXiv 2403.03853).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .modeling import decoder_layers
from .paths import PROBES_DIR

logger = logging.getLogger(__name__)

PROBE_FAMILIES: tuple[str, ...] = ("reasoning", "code", "math", "knowledge", "language")
MAX_PROBE_TOKENS = 96


def load_probes(folder: str | Path | None = None) -> dict[str, list[str]]:
    """Read every `*.txt` probe family in `folder` (the shipped probes by default), in name order."""
    folder = Path(folder) if folder else PROBES_DIR
    families = {}
    for path in sorted(folder.glob("*.txt")):
        passages = [passage.strip("\n") for passage in path.read_text(encoding="utf-8").split("\n\n")]
        passages = [passage for passage in passages if passage.strip()]
        if passages:
            families[path.stem] = passages
    if not families:
        raise FileNotFoundError(f"no probe texts (*.txt) in {folder}")
    return families


@dataclass
class ProbeProfile:
    """Block influence per family per layer, mean next-token loss per family, and how repetitive
    greedy continuations of the probe openings are (0 = no repeated 3-gram, near 1 = a loop)."""

    influence: dict[str, list[float]]
    loss: dict[str, float]
    repetition: float = 0.0

    def to_dict(self) -> dict:
        return {"influence": self.influence, "loss": self.loss, "repetition": self.repetition}

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeProfile":
        return cls(
            influence={k: list(v) for k, v in data["influence"].items()},
            loss=dict(data["loss"]),
            repetition=float(data.get("repetition", 0.0)),
        )


@torch.inference_mode()
def probe_profile(model, tokenizer, probes: dict[str, list[str]], max_tokens: int = MAX_PROBE_TOKENS) -> ProbeProfile:
    """Run every probe family through the model and measure each decoder layer's block influence."""
    from .evaluate import threads_for

    with threads_for(model):
        return _probe_profile(model, tokenizer, probes, max_tokens)


def _probe_profile(model, tokenizer, probes: dict[str, list[str]], max_tokens: int) -> ProbeProfile:
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    # Never probe past the positions the model was trained for (64 for the tiny family).
    max_tokens = min(max_tokens, getattr(model.config, "max_position_embeddings", None) or max_tokens)
    state: dict = {}

    def capture(index):
        def hook(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cosine = F.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)  # (batch, tokens)
            mask = state["mask"]
            state["sums"][index] += float((cosine * mask).sum())
            state["counts"][index] += float(mask.sum())

        return hook

    handles = [layer.register_forward_hook(capture(index), with_kwargs=True) for index, layer in enumerate(layers)]
    influence: dict[str, list[float]] = {}
    loss: dict[str, float] = {}
    try:
        for family, passages in probes.items():
            encoded = tokenizer(passages, return_tensors="pt", padding=True, truncation=True, max_length=max_tokens)
            input_ids = encoded["input_ids"].to(device)
            attention_mask = encoded["attention_mask"].to(device)
            state.update(mask=attention_mask.float(), sums=[0.0] * len(layers), counts=[0.0] * len(layers))
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

            influence[family] = [1.0 - total / max(count, 1.0) for total, count in zip(state["sums"], state["counts"])]
            targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
            loss[family] = float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100))
    finally:
        for handle in handles:
            handle.remove()
    return ProbeProfile(influence=influence, loss=loss, repetition=repetition_score(model, tokenizer, probes))


def repetition_score(model, tokenizer, probes: dict[str, list[str]], opening_tokens: int = 8, new_tokens: int = 32) -> float:
    """Mean share of repeated token 3-grams in greedy continuations of each family's first passage.

    Generation stops at end-of-sequence, so a model that answers briefly scores 0; a model
    stuck in a loop scores close to 1.
    """
    scores = []
    for passages in probes.values():
        ids = tokenizer(passages[0], return_tensors="pt", truncation=True, max_length=opening_tokens)["input_ids"]
        ids = ids.to(next(model.parameters()).device)
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )[0, ids.shape[1] :].tolist()
        trigrams = [tuple(output[i : i + 3]) for i in range(len(output) - 2)]
        scores.append(1.0 - len(set(trigrams)) / len(trigrams) if len(trigrams) >= 8 else 0.0)
    return sum(scores) / len(scores)


def weighted_influence(profile: ProbeProfile, family_weights: dict[str, float] | None = None) -> list[float]:
    """Average the families' block influence per layer with user weights (missing families weigh 1)."""
    weights = {family: (family_weights or {}).get(family, 1.0) for family in profile.influence}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"probe family weights must not all be zero, got {weights}")
    num_layers = len(next(iter(profile.influence.values())))
    return [
        sum(weights[family] * values[layer] for family, values in profile.influence.items()) / total
        for layer in range(num_layers)
    ]
