"""Quick eval: exact-match generation and log-likelihood multiple choice over JSONL suites.

A suite is a JSONL file in `assets/evals/` (or any path) with one item per line:

    {"id": "arith-test-0001", "split": "test", "skill": "arith", "kind": "generate",
     "prompt": "12+34=", "answer": "46", "max_new_tokens": 4}
    {"id": "gen-test-0001", "split": "test", "skill": "general", "kind": "choice",
     "prompt": "The capital of France is", "choices": [" Paris", " Rome"], "answer": 0}

`generate` items are decoded greedily; the output is cut at the end-of-sequence token or the
first newline, stripped of spaces and a trailing period, and compared with `answer` for exact
equality. `choice` items pick the continuation with the highest summed log-likelihood.
`"chat": true` wraps the prompt as one user turn of the tokenizer's chat template.
The `search` split is for fitness during evolution and the `test` split for reported results.
"""

import contextlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from tqdm.auto import tqdm

from .choices import SPLITS
from .errors import SuiteError
from .paths import EVALS_DIR
from .stats import PairedResult, paired_comparison, wilson_interval

logger = logging.getLogger(__name__)

ItemKind = Literal["generate", "choice"]
ITEM_KINDS: tuple[str, ...] = get_args(ItemKind)


@dataclass(frozen=True)
class EvalItem:
    """One suite item; `answer` is the expected text for `generate` and the choice index for `choice`."""

    id: str
    split: str
    skill: str
    kind: str
    prompt: str
    answer: str | int
    choices: tuple[str, ...] = ()
    max_new_tokens: int = 16
    chat: bool = False


def list_suites() -> list[str]:
    """Return the names of the suites shipped in `assets/evals/`."""
    return sorted(path.stem for path in EVALS_DIR.glob("*.jsonl"))


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """Map a suite name (`tiny`) or a path to a `.jsonl` file to an existing file."""
    path = Path(name_or_path)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise SuiteError(f"suite file {path} not found")
        return path
    shipped = EVALS_DIR / f"{name_or_path}.jsonl"
    if shipped.is_file():
        return shipped
    raise SuiteError(
        f"unknown suite {name_or_path!r}: pass a path to a .jsonl file or one of {', '.join(list_suites()) or '(none shipped)'}"
    )


def _parse_item(raw: dict, where: str) -> EvalItem:
    for key in ("id", "split", "kind", "prompt", "answer"):
        if key not in raw:
            raise SuiteError(f"{where}: missing field {key!r}")
    if raw["split"] not in SPLITS:
        raise SuiteError(f"{where}: split must be one of {', '.join(SPLITS)}, got {raw['split']!r}")
    if raw["kind"] not in ITEM_KINDS:
        raise SuiteError(f"{where}: kind must be one of {', '.join(ITEM_KINDS)}, got {raw['kind']!r}")

    choices = tuple(raw.get("choices", ()))
    if raw["kind"] == "choice":
        if len(choices) < 2 or not all(isinstance(choice, str) for choice in choices):
            raise SuiteError(f"{where}: a choice item needs a list of at least two strings in 'choices'")
        if not isinstance(raw["answer"], int) or not 0 <= raw["answer"] < len(choices):
            raise SuiteError(f"{where}: answer must be an index into choices (0..{len(choices) - 1}), got {raw['answer']!r}")
    elif not isinstance(raw["answer"], str):
        raise SuiteError(f"{where}: a generate item needs a string answer, got {raw['answer']!r}")

    max_new_tokens = raw.get("max_new_tokens", 16)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise SuiteError(f"{where}: max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    return EvalItem(
        id=str(raw["id"]),
        split=raw["split"],
        skill=str(raw.get("skill", "all")),
        kind=raw["kind"],
        prompt=str(raw["prompt"]),
        answer=raw["answer"],
        choices=choices,
        max_new_tokens=max_new_tokens,
        chat=bool(raw.get("chat", False)),
    )


def load_suite(name_or_path: str | Path, split: str | None = None) -> list[EvalItem]:
    """Read and validate a suite; with `split`, keep only that split's items.

    Raises `SuiteError` naming the file and line of a malformed item or a duplicate id.
    """
    if split is not None and split not in SPLITS:
        raise SuiteError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = resolve_suite_path(name_or_path)
    items: list[EvalItem] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise SuiteError(f"{where}: invalid JSON ({error.msg})") from None
        item = _parse_item(raw, where)
        if item.id in seen:
            raise SuiteError(f"{where}: duplicate item id {item.id!r}")
        seen.add(item.id)
        if split is None or item.split == split:
            items.append(item)
    if not items:
        raise SuiteError(f"suite {path} has no items" + (f" in split {split!r}" if split else ""))
    return items


def normalize_answer(text: str) -> str:
    """Cut generated text at the first newline and strip spaces and a trailing period."""
    return text.split("\n", 1)[0].strip().rstrip(".").strip()


@dataclass
class SuiteScore:
    """Per-item results of one model on a list of items, in item order."""

    item_ids: list[str]
    skills: list[str]
    correct: list[bool]
    predictions: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(sum(self.correct), self.n)

    @property
    def by_skill(self) -> dict[str, float]:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for skill, ok in zip(self.skills, self.correct):
            totals[skill][0] += int(ok)
            totals[skill][1] += 1
        return {skill: right / count for skill, (right, count) in sorted(totals.items())}

    def to_dict(self, model: str) -> dict:
        low, high = self.ci95
        return {
            "model": model,
            "accuracy": self.accuracy,
            "ci95": [low, high],
            "n": self.n,
            "by_skill": self.by_skill,
        }


class EncodedSuite:
    """Token ids of a suite for one tokenizer, built once and reused for every candidate.

    Generation prompts are grouped into length-sorted, left-padded batches; choice items become
    (context, continuation) pairs whose continuation log-likelihoods are summed.
    """

    def __init__(self, items: list[EvalItem], tokenizer, batch_size: int = 32):
        self.items = items
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pad_id = _pad_token_id(tokenizer)
        self.generate_indices = [i for i, item in enumerate(items) if item.kind == "generate"]
        self.choice_indices = [i for i, item in enumerate(items) if item.kind == "choice"]
        self.prompt_ids = {i: self._encode_prompt(items[i]) for i in range(len(items))}
        self.choice_ids = {
            i: [tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in items[i].choices]
            for i in self.choice_indices
        }

    def _encode_prompt(self, item: EvalItem) -> list[int]:
        if item.chat and getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": item.prompt}], add_generation_prompt=True, tokenize=False
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(item.prompt)["input_ids"]

    def generate_batches(self) -> list[list[int]]:
        order = sorted(self.generate_indices, key=lambda i: (self.items[i].max_new_tokens, len(self.prompt_ids[i])))
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]


def _pad_token_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return 0


def _stop_token_ids(model, tokenizer) -> list[int]:
    """Collect end-of-sequence ids from the generation config, the tokenizer and chat end-of-turn tokens."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(ids)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def _run_generate(model, encoded: EncodedSuite, predictions: dict[int, str], progress) -> None:
    device = _device_of(model)
    stop_ids = _stop_token_ids(model, encoded.tokenizer)
    for batch in encoded.generate_batches():
        width = max(len(encoded.prompt_ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), encoded.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids = encoded.prompt_ids[index]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)  # left padding keeps prompts flush with the new tokens
            attention_mask[row, width - len(ids) :] = 1
        max_new_tokens = max(encoded.items[i].max_new_tokens for i in batch)
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=encoded.pad_id,
            eos_token_id=stop_ids,
        )
        for row, index in enumerate(batch):
            new_tokens = output[row, width : width + encoded.items[index].max_new_tokens].tolist()
            for position, token in enumerate(new_tokens):
                if token in stop_ids:
                    new_tokens = new_tokens[:position]
                    break
            predictions[index] = encoded.tokenizer.decode(new_tokens, skip_special_tokens=True)
        progress.update(len(batch))


@torch.inference_mode()
def _run_choice(model, encoded: EncodedSuite, predictions: dict[int, str], progress) -> None:
    device = _device_of(model)
    pairs = [(i, c) for i in encoded.choice_indices for c in range(len(encoded.items[i].choices))]
    pairs.sort(key=lambda pair: len(encoded.prompt_ids[pair[0]]) + len(encoded.choice_ids[pair[0]][pair[1]]))
    scores: dict[int, list[float]] = {i: [0.0] * len(encoded.items[i].choices) for i in encoded.choice_indices}

    for start in range(0, len(pairs), encoded.batch_size):
        batch = pairs[start : start + encoded.batch_size]
        sequences = [encoded.prompt_ids[i] + encoded.choice_ids[i][c] for i, c in batch]
        width = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(batch), width), encoded.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)

        for row, (index, choice) in enumerate(batch):
            context_length = len(encoded.prompt_ids[index])
            continuation = encoded.choice_ids[index][choice]
            # Logits at position p predict token p + 1, so the continuation is read one step earlier.
            positions = torch.arange(context_length - 1, context_length - 1 + len(continuation), device=device)
            targets = torch.tensor(continuation, device=device)
            scores[index][choice] = float(log_probs[row, positions, targets].sum())

    for index in encoded.choice_indices:
        best = max(range(len(scores[index])), key=scores[index].__getitem__)
        predictions[index] = str(best)
        progress.update(1)


# Below this many parameters a forward pass is too small to split across threads: with two
# threads each small matrix product waits on the other thread, which on a busy 2-core machine
# made a tiny-family candidate 50 times slower (bench/inprocess.py, 0.14 s against 7.4 s).
SINGLE_THREAD_PARAMETERS = 20_000_000


@contextlib.contextmanager
def threads_for(model):
    """Run small models on one torch thread; leave the thread count alone for larger ones."""
    parameters = sum(parameter.numel() for parameter in model.parameters())
    previous = torch.get_num_threads()
    if parameters < SINGLE_THREAD_PARAMETERS and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def score_model(model, tokenizer, items: list[EvalItem] | EncodedSuite, *, batch_size: int = 32, quiet: bool = True) -> SuiteScore:
    """Score a causal LM on suite items (or on an `EncodedSuite` built for this tokenizer)."""
    encoded = items if isinstance(items, EncodedSuite) else EncodedSuite(items, tokenizer, batch_size)
    was_training = model.training
    model.eval()
    predictions: dict[int, str] = {}
    with threads_for(model), tqdm(total=len(encoded.items), desc="quick eval", disable=quiet, leave=False) as progress:
        if encoded.generate_indices:
            _run_generate(model, encoded, predictions, progress)
        if encoded.choice_indices:
            _run_choice(model, encoded, predictions, progress)
    model.train(was_training)

    correct = []
    for index, item in enumerate(encoded.items):
        if item.kind == "choice":
            correct.append(int(predictions[index]) == item.answer)
        else:
            correct.append(normalize_answer(predictions[index]) == normalize_answer(str(item.answer)))
    return SuiteScore(
        item_ids=[item.id for item in encoded.items],
        skills=[item.skill for item in encoded.items],
        correct=correct,
        predictions=[predictions[i] for i in range(len(encoded.items))],
    )


def compare_scores(named_scores: list[tuple[str, SuiteScore]]) -> list[PairedResult]:
    """Pair the last model against each earlier one (the child against its parents, by convention)."""
    if len(named_scores) < 2:
        return []
    last_name, last = named_scores[-1]
    return [paired_comparison(last_name, last.correct, name, score.correct) for name, score in named_scores[:-1]]


def suite_report(suite: str, split: str, named_scores: list[tuple[str, SuiteScore]]) -> dict:
    """The JSON form of one suite's results: per-model accuracy with interval, and the paired
    comparisons of the last model against each earlier one."""
    return {
        "suite": suite,
        "split": split,
        "results": [score.to_dict(name) for name, score in named_scores],
        "paired": [paired.to_dict() for paired in compare_scores(named_scores)],
    }


def suite_digest(name_or_path: str | Path) -> str:
    """SHA-256 of a suite file, so cached scores are dropped when the suite changes."""
    import hashlib

    return hashlib.sha256(resolve_suite_path(name_or_path).read_bytes()).hexdigest()
