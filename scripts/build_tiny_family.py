"""Build the tiny model family that powers the offline demo and the tests.

Trains a 6-layer Llama with a character-level tokenizer from scratch on CPU, on two synthetic
skills: 2-digit addition (`12+34=` -> `46`, both operands in 10..99) and word reversal
(`rev:abcd=` -> `dcba`, random lowercase words of 3 to 6 letters). Then it fine-tunes two
children from that base, each on one skill only, and writes:

    <out>/tiny-base/, <out>/tiny-arith/, <out>/tiny-reverse/   Hugging Face model folders
    <evals>                                                   the `tiny` evaluation suite

Each child gets better at its own skill and loses most of the other, while staying close
enough to the base that a merge of the two keeps most of both. The script ends with that
acceptance check on the suite's test split, prints a table and exits with status 1 if it fails.

    python scripts/build_tiny_family.py                  # full build: 3 to 5 minutes on one CPU core
    python scripts/build_tiny_family.py --quick --out /tmp/tiny --evals /tmp/tiny.jsonl
"""

import argparse
import copy
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

# The script also runs from a plain checkout, before `pip install -e .` puts darwin_core on the path.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from darwin_core.evaluate import EvalItem, load_suite, score_model  # noqa: E402

logger = logging.getLogger("build_tiny_family")

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARACTERS = [chr(code) for code in range(32, 127)] + ["\n"]  # printable ASCII, then newline

# Model shape. The merge method groups layers into 6 depth blocks, so the depth is fixed at 6.
# Hidden 64 and FFN 256 give 0.41M parameters, 1.6 MB per folder in float32.
N_LAYERS = 6
HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 256
N_HEADS = 4
MAX_POSITIONS = 64  # the maximum sequence length in training is 19 tokens: <bos>rev:abcdef=fedcba<eos>

# Suite shape: 100 items per skill and split, so each split has 200 items.
SKILLS = ("arith", "reverse")
SPLITS = ("search", "test")
ITEMS_PER_SKILL_AND_SPLIT = 100
MAX_NEW_TOKENS = {"arith": 4, "reverse": 7}  # the maximum answer length plus one for <eos>
OPERANDS = range(10, 100)
WORD_LENGTHS = range(3, 7)

# Base training. Reversal is learned several times faster than addition, so the base samples it
# less often. Training stops at the first validation check where both skills lie inside
# BASE_BAND: good at both but short of perfect, so that each child has room to improve.
BATCH_SIZE = 128
BASE_MIX = {"arith": 0.8, "reverse": 0.2}
BASE_LR = 2e-3
BASE_WARMUP_STEPS = 100
BASE_MAX_STEPS = 3000
BASE_BAND = (0.6, 0.9)
VALIDATION_ITEMS_PER_SKILL = 100
VALIDATION_INTERVAL = 25

# Child training: one skill only, starting from the base. Each child stops at the first validation
# check where it reaches CHILD_OWN_TARGET on its own skill and has fallen to CHILD_OTHER_LIMIT on
# the other. Stopping there keeps both children as close to the base as the specialization allows,
# and that closeness is what lets a merge of the two keep most of both skills.
CHILD_LR = 1e-3
CHILD_WARMUP_STEPS = 20
CHILD_MAX_STEPS = 1000
CHILD_OWN_TARGET = 0.9
CHILD_OTHER_LIMIT = 0.3

QUICK_BASE_MAX_STEPS = 200
QUICK_CHILD_STEPS = 30
LOG_INTERVAL = 100

# A merge must beat both children by this much mean accuracy on the test split.
REQUIRED_MERGE_GAIN = 0.08


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer: one token per character, `<bos>` prepended, no `<eos>`."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))

    # Split the text into single characters, newline included, so that every character is one word.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")

    # Fuse joins the tokens back without the space that the default decoder puts between words.
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    backend.add_special_tokens(SPECIAL_TOKENS)

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",  # batched generation needs the prompts aligned on the right
        clean_up_tokenization_spaces=False,  # the clean-up would delete spaces before punctuation
        model_max_length=MAX_POSITIONS,
    )


def check_tokenizer(tokenizer) -> None:
    """Raise ValueError unless encoding adds only <bos> and decoding returns the exact text."""
    ids = tokenizer("12+34=")["input_ids"]
    if len(ids) != 7 or ids[0] != tokenizer.bos_token_id:
        raise ValueError(f"tokenizer('12+34=') should give <bos> plus 6 ids, got {ids}")

    text = "The quick brown fox, {jumps} over 12+34=46!\nrev:abc=cba ~"
    ids = tokenizer(text)["input_ids"]
    if tokenizer.unk_token_id in ids:
        raise ValueError(f"printable ASCII text maps to <unk>: {ids}")
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    if decoded != text:
        raise ValueError(f"round trip changed the text: {text!r} came back as {decoded!r}")


def random_word(rng: random.Random) -> str:
    length = rng.choice(WORD_LENGTHS)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length))


def make_example(skill: str, operands: tuple[int, int] | None = None, word: str | None = None) -> tuple[str, str]:
    """Return the (prompt, answer) pair of one example of a skill."""
    if skill == "arith":
        a, b = operands
        return f"{a}+{b}=", str(a + b)
    return f"rev:{word}=", word[::-1]


def make_item(skill: str, split: str, number: int, prompt: str, answer: str) -> dict:
    return {
        "id": f"{skill}-{split}-{number:04d}",
        "split": split,
        "skill": skill,
        "kind": "generate",
        "prompt": prompt,
        "answer": answer,
        "max_new_tokens": MAX_NEW_TOKENS[skill],
    }


def make_suite(rng: random.Random) -> list[dict]:
    """Draw the items of the `tiny` suite: 100 per skill and split, no prompt repeated."""
    n_items = ITEMS_PER_SKILL_AND_SPLIT * len(SPLITS)
    all_pairs = [(a, b) for a in OPERANDS for b in OPERANDS]
    operand_pairs = rng.sample(all_pairs, n_items)
    words = set()
    while len(words) < n_items:
        words.add(random_word(rng))
    words = sorted(words)  # a set's order varies between runs, so sort before shuffling
    rng.shuffle(words)

    items = []
    for split_index, split in enumerate(SPLITS):
        for skill in SKILLS:
            for number in range(ITEMS_PER_SKILL_AND_SPLIT):
                index = split_index * ITEMS_PER_SKILL_AND_SPLIT + number
                prompt, answer = make_example(skill, operands=operand_pairs[index], word=words[index])
                items.append(make_item(skill, split, number + 1, prompt, answer))
    return items


class TrainingData:
    """Random training examples that never repeat a prompt of the suite or of the validation set."""

    def __init__(self, suite: list[dict], seed: int):
        self.rng = random.Random(seed)
        self.held_out = {item["prompt"] for item in suite}

        # The validation set decides when the base stops, so it is drawn first and then held out too.
        self.validation = []
        for skill in SKILLS:
            prompts = set()
            while len(prompts) < VALIDATION_ITEMS_PER_SKILL:
                prompt, answer = self.sample(skill)
                if prompt in prompts:
                    continue
                prompts.add(prompt)
                self.validation.append(EvalItem(**make_item(skill, "validation", len(prompts), prompt, answer)))
            self.held_out |= prompts

        # Both orders are held out, so that the model cannot answer 34+12 by having seen 12+34.
        self.operand_pairs = [
            (a, b) for a in OPERANDS for b in OPERANDS
            if f"{a}+{b}=" not in self.held_out and f"{b}+{a}=" not in self.held_out
        ]

    def sample(self, skill: str) -> tuple[str, str]:
        """Draw one (prompt, answer) pair whose prompt is not held out."""
        while True:
            if skill == "arith":
                operands = (self.rng.choice(OPERANDS), self.rng.choice(OPERANDS))
                prompt, answer = make_example(skill, operands=operands)
            else:
                prompt, answer = make_example(skill, word=random_word(self.rng))
            if prompt not in self.held_out:
                return prompt, answer

    def batch(self, mix: dict[str, float], tokenizer, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a batch with skills weighted by `mix`, and return (input_ids, labels).

        Both tensors are (batch, time) and right-padded. The labels are -100 except on the answer and <eos>.
        """
        skills = self.rng.choices(list(mix), weights=list(mix.values()), k=batch_size)
        rows, label_rows = [], []
        for skill in skills:
            if skill == "arith":
                prompt, answer = make_example(skill, operands=self.rng.choice(self.operand_pairs))
            else:
                prompt, answer = self.sample(skill)
            prompt_ids = tokenizer(prompt)["input_ids"]  # starts with <bos>
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append(prompt_ids + answer_ids)
            # The loss covers only the answer: the prompt's operands and letters are random, so
            # predicting them teaches nothing.
            label_rows.append([-100] * len(prompt_ids) + answer_ids)

        length = max(len(row) for row in rows)
        input_ids = torch.full((batch_size, length), tokenizer.pad_token_id)
        labels = torch.full((batch_size, length), -100)
        for i, (row, label_row) in enumerate(zip(rows, label_rows)):
            input_ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(label_row)] = torch.tensor(label_row)
        return input_ids, labels


def new_model(tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        # Separate input and output embeddings, so that merges see both as ordinary tensors.
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def train_step(model, optimizer, tokenizer, data: TrainingData, mix: dict[str, float], lr: float) -> float:
    """Take one AdamW step on a fresh batch drawn with `mix`; return the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr

    # No attention mask: padding sits only after <eos>, and the causal mask already keeps
    # every real token from seeing it.
    input_ids, labels = data.batch(mix, tokenizer, BATCH_SIZE)
    loss = model(input_ids=input_ids, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def new_optimizer(model) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), betas=(0.9, 0.95), weight_decay=0.1)


def train_base(model, tokenizer, data: TrainingData, max_steps: int) -> None:
    """Train the base until every skill's validation accuracy lies inside BASE_BAND.

    A skill above the band is left out of the batches until it falls back inside, so the faster
    skill waits for the slower one.
    """
    optimizer = new_optimizer(model)
    mix = dict(BASE_MIX)
    low, high = BASE_BAND
    model.train()
    started = time.time()

    for step in range(1, max_steps + 1):
        lr = BASE_LR * min(1.0, step / BASE_WARMUP_STEPS)
        loss = train_step(model, optimizer, tokenizer, data, mix, lr)
        if step % LOG_INTERVAL == 0:
            logger.info("tiny-base step %d/%d loss %.4f (%.0f s)", step, max_steps, loss, time.time() - started)
        if step % VALIDATION_INTERVAL != 0:
            continue

        by_skill = score_model(model, tokenizer, data.validation).by_skill
        logger.info("tiny-base step %d validation accuracy: %s", step, format_accuracy(by_skill))
        if all(low <= accuracy <= high for accuracy in by_skill.values()):
            logger.info("tiny-base stops after %d steps", step)
            break
        mix = {skill: weight for skill, weight in BASE_MIX.items() if by_skill[skill] <= high}
        if not mix:
            logger.warning("tiny-base passed the band %s on every skill at once, so it stops here", BASE_BAND)
            break
    else:
        logger.warning("tiny-base did not reach the band %s on every skill within %d steps", BASE_BAND, max_steps)

    model.eval()


def train_child(model, tokenizer, data: TrainingData, skill: str, max_steps: int) -> None:
    """Fine-tune a copy of the base in place on one skill until it specializes.

    Training stops at the first validation check where the child reaches CHILD_OWN_TARGET on its
    own skill and has fallen to CHILD_OTHER_LIMIT or below on every other skill.
    """
    optimizer = new_optimizer(model)
    model.train()
    started = time.time()

    for step in range(1, max_steps + 1):
        lr = CHILD_LR * min(1.0, step / CHILD_WARMUP_STEPS)
        loss = train_step(model, optimizer, tokenizer, data, {skill: 1.0}, lr)
        if step % LOG_INTERVAL == 0:
            logger.info("tiny-%s step %d/%d loss %.4f (%.0f s)", skill, step, max_steps, loss, time.time() - started)
        if step % VALIDATION_INTERVAL != 0:
            continue

        by_skill = score_model(model, tokenizer, data.validation).by_skill
        logger.info("tiny-%s step %d validation accuracy: %s", skill, step, format_accuracy(by_skill))
        others = [accuracy for other, accuracy in by_skill.items() if other != skill]
        if by_skill[skill] >= CHILD_OWN_TARGET and max(others) <= CHILD_OTHER_LIMIT:
            logger.info("tiny-%s stops after %d steps", skill, step)
            break
    else:
        logger.warning("tiny-%s did not specialize within %d steps", skill, max_steps)

    model.eval()


def format_accuracy(by_skill: dict[str, float]) -> str:
    return ", ".join(f"{skill} {accuracy:.2f}" for skill, accuracy in by_skill.items())


def save_model(model, tokenizer, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    logger.info("wrote %s (%.1f MB of weights)", folder, (folder / "model.safetensors").stat().st_size / 1e6)


def linear_merge(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    return {name: (1 - t) * a[name] + t * b[name] for name in a}


def slerp_merge(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """Interpolate each pair of flattened tensors along the great circle between their directions."""
    merged = {}
    for name in a:
        x, y = a[name].flatten(), b[name].flatten()
        cos_angle = torch.dot(x, y) / (x.norm() * y.norm()).clamp_min(1e-12)
        angle = torch.arccos(cos_angle.clamp(-1.0, 1.0))

        # Nearly parallel tensors make sin(angle) vanish, and there the straight line is the same path.
        if angle.sin() < 1e-4:
            merged[name] = (1 - t) * a[name] + t * b[name]
            continue

        weight_a = torch.sin((1 - t) * angle) / angle.sin()
        weight_b = torch.sin(t * angle) / angle.sin()
        merged[name] = (weight_a * x + weight_b * y).view_as(a[name])
    return merged


def run_acceptance_check(out: Path, evals: Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Score the three models and two merges of the children on the test split.

    Models are loaded back from `out`, so the check also covers the saved folders.
    Returns the accuracy rows by model name and a list of failed conditions.
    """
    items = load_suite(evals, split="test")
    tokenizer = AutoTokenizer.from_pretrained(out / "tiny-base")
    check_tokenizer(tokenizer)
    single_names = ("tiny-base", "tiny-arith", "tiny-reverse")
    candidates = {name: AutoModelForCausalLM.from_pretrained(out / name) for name in single_names}

    arith_state = candidates["tiny-arith"].state_dict()
    reverse_state = candidates["tiny-reverse"].state_dict()
    for name, merge in (("linear 0.5", linear_merge), ("slerp 0.5", slerp_merge)):
        merged = copy.deepcopy(candidates["tiny-arith"])
        merged.load_state_dict(merge(arith_state, reverse_state, 0.5))
        candidates[name] = merged

    rows = {}
    for name, model in candidates.items():
        result = score_model(model, tokenizer, items)
        rows[name] = {"mean": result.accuracy, **result.by_skill}

    failures = []
    for merge_name in ("linear 0.5", "slerp 0.5"):
        for child in ("tiny-arith", "tiny-reverse"):
            gain = rows[merge_name]["mean"] - rows[child]["mean"]
            if gain < REQUIRED_MERGE_GAIN:
                failures.append(
                    f"{merge_name} scores {rows[merge_name]['mean']:.2f}, {gain:+.2f} against {child} "
                    f"({rows[child]['mean']:.2f}), but the check requires at least {REQUIRED_MERGE_GAIN:+.2f}"
                )
    for child, skill in (("tiny-arith", "arith"), ("tiny-reverse", "reverse")):
        for other in single_names:
            if other != child and rows[other][skill] >= rows[child][skill]:
                failures.append(
                    f"{child} scores {rows[child][skill]:.2f} at {skill}, but {other} scores {rows[other][skill]:.2f}; "
                    f"the child must be the best single model at its own skill"
                )
    return rows, failures


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print(f"{'test split':<14}{'mean':>8}{'arith':>8}{'reverse':>9}")
    for name, row in rows.items():
        print(f"{name:<14}{row['mean']:>8.2f}{row['arith']:>8.2f}{row['reverse']:>9.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "assets" / "tiny", help="parent folder of the three model folders"
    )
    parser.add_argument(
        "--evals", type=Path, default=REPO_ROOT / "assets" / "evals" / "tiny.jsonl", help="suite file to write"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the suite, the initial weights and the training data")
    parser.add_argument(
        "--threads", type=int, default=1,
        # Measured with torch 2.13 on a 2-core machine: a training step took 25% less time with
        # 2 threads when the machine was idle, but 18 times longer while another process was busy.
        help="CPU threads for torch; results are reproducible for a given seed and thread count",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help=f"smoke run with at most {QUICK_BASE_MAX_STEPS} base and {QUICK_CHILD_STEPS} child steps; "
        "the acceptance table is printed, but a failed check does not change the exit status",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    transformers_logging.disable_progress_bar()  # one bar per saved or loaded model would bury the log
    torch.set_num_threads(args.threads)
    started = time.time()

    # Tokenizer and suite come first: the suite fixes the prompts that training must never show.
    tokenizer = build_tokenizer()
    check_tokenizer(tokenizer)
    suite = make_suite(random.Random(args.seed))
    args.evals.parent.mkdir(parents=True, exist_ok=True)
    args.evals.write_text("".join(json.dumps(item) + "\n" for item in suite))
    logger.info("wrote %s (%d items)", args.evals, len(suite))

    # The base learns both skills from scratch.
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    data = TrainingData(suite, seed=args.seed)
    base = new_model(tokenizer)
    logger.info("model has %d parameters", sum(p.numel() for p in base.parameters()))
    max_steps = QUICK_BASE_MAX_STEPS if args.quick else BASE_MAX_STEPS
    train_base(base, tokenizer, data, max_steps)
    save_model(base, tokenizer, args.out / "tiny-base")

    # Each child continues from the base on one skill only.
    child_steps = QUICK_CHILD_STEPS if args.quick else CHILD_MAX_STEPS
    for skill in SKILLS:
        child = copy.deepcopy(base)
        train_child(child, tokenizer, data, skill, child_steps)
        save_model(child, tokenizer, args.out / f"tiny-{skill}")

    rows, failures = run_acceptance_check(args.out, args.evals)
    print_table(rows)
    logger.info("built the tiny family in %.0f s", time.time() - started)
    if args.quick:
        if failures:
            logger.warning("%d acceptance conditions failed, as expected after --quick; the check is not enforced",
                           len(failures))
        return 0

    for failure in failures:
        logger.error("acceptance check failed: %s", failure)
    if failures:
        logger.error("do not commit this family; retune BASE_BAND, CHILD_LR or CHILD_OTHER_LIMIT and rebuild")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
