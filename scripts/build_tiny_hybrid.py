"""Build tiny-hybrid, the hybrid Transformer/state-space cousin of the tiny family.

The cousin is a Bamba model (transformers' BambaForCausalLM: Mamba-2 mixers, with attention in
every third layer) with tiny-base's depth, hidden size, FFN size and character tokenizer. Bamba
runs forward and generate on CPU through transformers' PyTorch reference kernels.

It starts from tiny-base wherever the shapes allow. The Architecture Mapper pairs the hybrid's
tensors with tiny-base's, and the paired ones are copied: embedding, output layer, norms, every
FFN, and the attention of the attention layers. The Mamba-2 mixers start with a zero output
projection, so at first each adds nothing to the residual stream.
The cousin is then trained briefly on a third skill, upper-casing (`up:abcd=` -> `ABCD`, random
lowercase words of 3 to 6 letters), with tiny-base's two skills mixed in so that it keeps them.
It writes:

    <out>      the model folder (float32 safetensors, tiny-base's tokenizer files)
    <evals>    the `upper` evaluation suite, 100 items per split, in the format of tiny.jsonl

and ends with a table of tiny-base and tiny-hybrid on both suites' test splits. It exits with
status 1 when the cousin does not beat tiny-base on upper-casing by `REQUIRED_UPPER_GAIN`.

    python scripts/build_tiny_hybrid.py                 # a few minutes on 2 cores
    python scripts/build_tiny_hybrid.py --quick --out /tmp/tiny-hybrid --evals /tmp/upper.jsonl
"""

import argparse
import json
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BambaConfig, BambaForCausalLM, GenerationConfig

# The script runs from a plain checkout too, before `pip install -e .` has put darwin_core on the path.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

logger = logging.getLogger("build_tiny_hybrid")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SKILL = "upper"
SPLITS = ("search", "test")
ITEMS_PER_SPLIT = 100
WORD_LENGTHS = range(3, 7)
MAX_NEW_TOKENS = 8  # the longest expected output (6 letters) plus <eos>, with one spare token
OPERANDS = range(10, 100)

# Attention in every third layer (layers 2 and 5 of 6), Mamba-2 in the others. Expand 1 keeps the
# mixer narrower than an attention block, so the cousin stays close to tiny-base's size.
ATTENTION_EVERY = 3
MAMBA_HEADS = 4
MAMBA_STATE = 16
MAMBA_EXPAND = 1
MAMBA_CHUNK = 32

# Training: half of every batch is the new skill, the rest replays tiny-base's two skills.
MIX = {"upper": 0.5, "arith": 0.25, "reverse": 0.25}
BATCH_SIZE = 64
STEPS = 1500
QUICK_STEPS = 20
LR = 2e-3
# The FFNs come from tiny-base and move ten times slower than the rest, so they stay close
# enough to tiny-base's for an FFN crossbreed with a sibling of tiny-base to keep working.
FFN_LR_SCALE = 0.1
WARMUP_STEPS = 50
LOG_INTERVAL = 50
REQUIRED_UPPER_GAIN = 0.3


def random_word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.choice(WORD_LENGTHS)))


def make_example(skill: str, rng: random.Random) -> tuple[str, str]:
    """Draw one (prompt, answer) pair in the family's formats: `12+34=` -> `46`, `rev:abc=` -> `cba`, `up:abc=` -> `ABC`."""
    if skill == "arith":
        a, b = rng.choice(OPERANDS), rng.choice(OPERANDS)
        return f"{a}+{b}=", str(a + b)
    word = random_word(rng)
    if skill == "reverse":
        return f"rev:{word}=", word[::-1]
    return f"up:{word}=", word.upper()


def make_suite(rng: random.Random) -> list[dict]:
    """Draw the `upper` suite: 100 distinct words per split, none shared between splits."""
    words: set[str] = set()
    while len(words) < ITEMS_PER_SPLIT * len(SPLITS):
        words.add(random_word(rng))
    ordered = sorted(words)  # a set's order varies between runs, so sort before shuffling
    rng.shuffle(ordered)
    items = []
    for split_index, split in enumerate(SPLITS):
        for number in range(ITEMS_PER_SPLIT):
            word = ordered[split_index * ITEMS_PER_SPLIT + number]
            items.append({
                "id": f"{SKILL}-{split}-{number + 1:04d}",
                "split": split,
                "skill": SKILL,
                "kind": "generate",
                "prompt": f"up:{word}=",
                "answer": word.upper(),
                "max_new_tokens": MAX_NEW_TOKENS,
            })
    return items


def held_out_prompts(suites: list[Path]) -> set[str]:
    """Collect every prompt of the suites, with both operand orders of an addition."""
    prompts = set()
    for path in suites:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompt = json.loads(line)["prompt"]
                prompts.add(prompt)
                if "+" in prompt and prompt.endswith("="):
                    a, b = prompt[:-1].split("+")
                    prompts.add(f"{b}+{a}=")
    return prompts


def training_batch(tokenizer, rng: random.Random, held_out: set[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (input_ids, labels), both (batch, time) and right-padded. The labels cover the answer and <eos>."""
    skills = rng.choices(list(MIX), weights=list(MIX.values()), k=BATCH_SIZE)
    rows, label_rows = [], []
    for skill in skills:
        prompt, answer = make_example(skill, rng)
        while prompt in held_out:
            prompt, answer = make_example(skill, rng)
        prompt_ids = tokenizer(prompt)["input_ids"]  # starts with <bos>
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        label_rows.append([-100] * len(prompt_ids) + answer_ids)
    length = max(len(row) for row in rows)
    input_ids = torch.full((BATCH_SIZE, length), tokenizer.pad_token_id)
    labels = torch.full((BATCH_SIZE, length), -100)
    for i, (row, label_row) in enumerate(zip(rows, label_rows)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(label_row)] = torch.tensor(label_row)
    return input_ids, labels


def hybrid_config(base: dict) -> BambaConfig:
    layers = base["num_hidden_layers"]
    return BambaConfig(
        vocab_size=base["vocab_size"],
        hidden_size=base["hidden_size"],
        intermediate_size=base["intermediate_size"],
        num_hidden_layers=layers,
        num_attention_heads=base["num_attention_heads"],
        num_key_value_heads=base.get("num_key_value_heads") or base["num_attention_heads"],
        max_position_embeddings=base["max_position_embeddings"],
        rms_norm_eps=base.get("rms_norm_eps", 1e-6),
        attn_layer_indices=[layer for layer in range(layers) if layer % ATTENTION_EVERY == ATTENTION_EVERY - 1],
        mamba_n_heads=MAMBA_HEADS,
        mamba_d_head=MAMBA_EXPAND * base["hidden_size"] // MAMBA_HEADS,
        mamba_n_groups=1,
        mamba_d_state=MAMBA_STATE,
        mamba_expand=MAMBA_EXPAND,
        mamba_chunk_size=MAMBA_CHUNK,
        tie_word_embeddings=False,
        bos_token_id=base["bos_token_id"],
        eos_token_id=base["eos_token_id"],
        pad_token_id=base["pad_token_id"],
    )


def initialise_from_base(model: BambaForCausalLM, base_folder: Path, scratch: Path) -> tuple[int, int]:
    """Copy every tensor the Architecture Mapper pairs with tiny-base; return (copied, total)."""
    from darwin_core.mapper import MapperSettings, resolve
    from darwin_core.parents import resolve_parent

    model.save_pretrained(scratch)
    for name in TOKENIZER_FILES:
        if (base_folder / name).is_file():
            shutil.copy2(base_folder / name, scratch / name)
    hybrid, base = resolve_parent(str(scratch)), resolve_parent(str(base_folder))
    mapping, report = resolve(hybrid, base, settings=MapperSettings(min_match=0.0))
    for note in report.notes:
        logger.info("mapper: %s", note)

    state = model.state_dict()
    with torch.no_grad():
        for name, partner in mapping.mother.items():
            state[name].copy_(partner.assemble(base.checkpoint.get, state[name]))
        # Each new Mamba-2 mixer starts as a no-op on the residual stream, so the cousin starts
        # from tiny-base's function minus the attention it lost, not from random noise.
        for layer in model.model.layers:
            if hasattr(layer, "mamba"):
                layer.mamba.out_proj.weight.zero_()
    return len(mapping.mother), report.total


def train(model, tokenizer, steps: int, held_out: set[str], seed: int) -> None:
    """AdamW with linear warmup, then cosine decay to a tenth of the learning rate."""
    rng = random.Random(seed)
    ffn = [p for name, p in model.named_parameters() if ".feed_forward." in name or ".pre_ff_layernorm." in name]
    ffn_ids = {id(p) for p in ffn}
    others = [p for p in model.parameters() if id(p) not in ffn_ids]
    groups = [{"params": others, "scale": 1.0}, {"params": ffn, "scale": FFN_LR_SCALE}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    started = time.time()
    for step in range(steps):
        progress = max(0.0, (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS))
        step_lr = LR * (step + 1) / WARMUP_STEPS if step < WARMUP_STEPS else LR * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = step_lr * group["scale"]
        input_ids, labels = training_batch(tokenizer, rng, held_out)
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % LOG_INTERVAL == 0 or step == steps - 1:
            logger.info("step %d/%d loss %.4f lr %.2e (%.0f s)", step + 1, steps, loss.item(), step_lr, time.time() - started)
    model.eval()


def score_table(folders: dict[str, Path], suites: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Test-split accuracy per skill of each model folder."""
    from darwin_core.evaluate import load_suite, score_model
    from darwin_core.modeling import load_model

    rows = {}
    for name, folder in folders.items():
        model, tokenizer = load_model(folder)
        row = {}
        for path in suites.values():
            row.update(score_model(model, tokenizer, load_suite(str(path), "test")).by_skill)
        rows[name] = row
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=REPO_ROOT / "assets" / "tiny" / "tiny-base", help="tiny-base model folder")
    parser.add_argument("--tiny-evals", type=Path, default=REPO_ROOT / "assets" / "evals" / "tiny.jsonl",
                        help="the family's suite; its prompts are held out of training and it is scored at the end")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "assets" / "tiny" / "tiny-hybrid", help="folder to write the cousin to")
    parser.add_argument("--evals", type=Path, default=REPO_ROOT / "assets" / "evals" / "upper.jsonl", help="path of the upper suite to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the suite, the Mamba-2 initialisation and the training data")
    parser.add_argument("--quick", action="store_true", help=f"smoke run of {QUICK_STEPS} steps; the check is reported but not enforced")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS})")
    # One thread: on a shared 2-core machine, two threads per process ran up to 40 times slower.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    started = time.time()

    if not (args.base / "model.safetensors").is_file():
        logger.error("%s has no model.safetensors; build the tiny family first (scripts/build_tiny_family.py)", args.base)
        return 1
    if not args.tiny_evals.is_file():
        logger.error("%s not found; it is written by scripts/build_tiny_family.py", args.tiny_evals)
        return 1

    suite = make_suite(random.Random(args.seed))
    args.evals.parent.mkdir(parents=True, exist_ok=True)
    args.evals.write_text("".join(json.dumps(item) + "\n" for item in suite))
    logger.info("wrote %s (%d items)", args.evals, len(suite))
    held_out = held_out_prompts([args.evals, args.tiny_evals])

    base_config = json.loads((args.base / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(args.base))
    torch.manual_seed(args.seed)
    model = BambaForCausalLM(hybrid_config(base_config))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    scratch = args.out.parent / f".{args.out.name}.init"
    try:
        copied, total = initialise_from_base(model, args.base, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("initialised %d of %d tensors from %s; %d parameters", copied, total, args.base, sum(p.numel() for p in model.parameters()))

    train(model, tokenizer, QUICK_STEPS if args.quick else args.steps, held_out, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    for name in TOKENIZER_FILES:
        if (args.base / name).is_file():
            shutil.copy2(args.base / name, args.out / name)
    logger.info("wrote %s (%.2f MB of weights)", args.out, (args.out / "model.safetensors").stat().st_size / 1e6)

    rows = score_table({"tiny-base": args.base, "tiny-hybrid": args.out}, {"tiny": args.tiny_evals, SKILL: args.evals})
    skills = sorted({skill for row in rows.values() for skill in row})
    print(f"{'model':<14}" + "".join(f"{skill:>9}" for skill in skills))
    for name, row in rows.items():
        print(f"{name:<14}" + "".join(f"{row.get(skill, float('nan')):>9.2f}" for skill in skills))
    logger.info("built tiny-hybrid in %.0f s", time.time() - started)

    gain = rows["tiny-hybrid"][SKILL] - rows["tiny-base"][SKILL]
    if gain < REQUIRED_UPPER_GAIN:
        logger.error("tiny-hybrid beats tiny-base at %s by %+.2f, needs %+.2f", SKILL, gain, REQUIRED_UPPER_GAIN)
        return 0 if args.quick else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
