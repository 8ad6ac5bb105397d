"""Darwin Studio benchmarks: every figure a ratio against a reference measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--skip-mergekit]

1. breed vs mergekit: two 135M parents (the SmolLM2 father and a full sibling materialised
   from its LoRA adapter), fp32 and bf16, linear / slerp / ties / dare_ties at one global ratio,
   whole processes from disk to disk; our time and peak RSS over mergekit's.
2. breed vs raw I/O: our streaming linear breed over reading both parents' bytes and writing
   one child's bytes with plain file I/O on the same disk.
3. out of core: synthetic parents larger than a memory cap; the breed finishes and its peak RSS
   stays within a few of the largest tensors.
4. in-memory candidates: one candidate merge of 135M parents from loaded tensors, and a full
   evolution generation (merge + search-split eval), as candidates per minute.
5. MRI scan of two 135M parents, static and probe terms.
Plus `darwin --help` start-up time. Prints one table and writes bench/results/results.json and
the table into BENCHMARKS.md.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, ROOT, Row, best_of, format_table, machine_facts, markdown_table, require_success, run_measured, save_results  # noqa: E402

DARWIN = [PYTHON, "-m", "darwin_core"]
METHODS = ("linear", "slerp", "ties", "dare_ties")
RATIO = 0.5
DENSITY = 0.5
MERGEKIT_TARGET = 0.33
RAW_IO_TARGET = 1.5
RSS_TARGET = 0.5


def prepare_parents(work: Path, dtype: str) -> tuple[Path, Path]:
    """The SmolLM2 father and its arithmetic sibling as plain safetensors folders in `dtype`."""
    import torch
    from safetensors.torch import load_file, save_file

    from darwin_core.parents import resolve_parent

    father = resolve_parent("embedded:smollm2-135m-instruct").folder
    mother = resolve_parent("embedded:smollm2-arith").folder
    if dtype == "float32":
        return father, mother
    converted = []
    for name, source in (("father", father), ("mother", mother)):
        target = work / f"{name}-{dtype}"
        if not target.is_dir():
            shutil.copytree(source, target)
            for path in target.glob("*.safetensors"):
                tensors = {key: value.to(getattr(torch, dtype)) for key, value in load_file(path).items()}
                save_file(tensors, path, metadata={"format": "pt"})
            config = json.loads((target / "config.json").read_text())
            config["dtype"] = dtype
            (target / "config.json").write_text(json.dumps(config, indent=2))
        converted.append(target)
    return converted[0], converted[1]


def darwin_breed_command(father: Path, mother: Path, out: Path, method: str) -> list[str]:
    return DARWIN + [
        "breed", "--father", str(father), "--mother", str(mother), "--out", str(out), "--method", method,
        "--ratio", str(RATIO), "--density", str(DENSITY), "--no-health", "--no-eval", "--quiet", "--overwrite",
    ]


def bench_vs_mergekit(work: Path, runs: int, dtypes: list[str], references: dict) -> list[Row]:
    """Rows for every method and dtype; fills `references[(method, dtype)]` with mergekit's seconds."""
    from mergekit_ref import agreement, ensure_mergekit, mergekit_command, write_config

    executable = ensure_mergekit()
    rows = []
    for dtype in dtypes:
        father, mother = prepare_parents(work, dtype)
        for method in METHODS:
            ours_out, theirs_out = work / f"ours-{method}-{dtype}", work / f"mergekit-{method}-{dtype}"
            config = write_config(work / f"{method}-{dtype}.yml", method, father, mother, RATIO, DENSITY, dtype)

            def ours():
                return require_success(run_measured(darwin_breed_command(father, mother, ours_out, method)), f"darwin breed {method}")

            def theirs():
                shutil.rmtree(theirs_out, ignore_errors=True)
                return require_success(run_measured(mergekit_command(executable, config, theirs_out)), f"mergekit {method}")

            mine, reference = best_of(runs, ours), best_of(runs, theirs)
            references[(method, dtype)] = reference.seconds
            note = agreement(ours_out, theirs_out, father, method)
            time_ratio = mine.seconds / reference.seconds
            rss_ratio = mine.peak_rss_mb / reference.peak_rss_mb
            rows.append(Row(f"breed {method} {dtype} vs mergekit: time", f"{mine.seconds:.2f} s", f"{reference.seconds:.2f} s",
                            time_ratio, f"<= {MERGEKIT_TARGET}x", time_ratio <= MERGEKIT_TARGET, note))
            rows.append(Row(f"breed {method} {dtype} vs mergekit: peak RSS", f"{mine.peak_rss_mb:.0f} MB", f"{reference.peak_rss_mb:.0f} MB",
                            rss_ratio, f"<= {RSS_TARGET}x", rss_ratio <= RSS_TARGET))
    return rows


def bench_darwin_plan(work: Path, runs: int, reference_seconds: float | None) -> list[Row]:
    """The full Darwin operator (MRI cached beforehand) against mergekit's DARE-TIES time."""
    father, mother = prepare_parents(work, "float32")
    scan = require_success(run_measured(DARWIN + ["mri", "--father", str(father), "--mother", str(mother), "--quiet", "--json"]), "darwin mri")
    out = work / "ours-darwin"
    command = DARWIN + ["breed", "--father", str(father), "--mother", str(mother), "--out", str(out), "--no-health", "--no-eval",
                        "--quiet", "--overwrite"]
    mine = best_of(runs, lambda: require_success(run_measured(command), "darwin breed (Darwin plan)"))
    ratio = mine.seconds / reference_seconds if reference_seconds else None
    return [Row(
        "breed Darwin plan float32 (MRI cached) vs mergekit dare_ties", f"{mine.seconds:.2f} s",
        f"{reference_seconds:.2f} s" if reference_seconds else "not measured", ratio,
        f"<= {MERGEKIT_TARGET}x", ratio <= MERGEKIT_TARGET if ratio is not None else None,
        f"peak RSS {mine.peak_rss_mb:.0f} MB; the MRI scan itself took {scan.seconds:.1f} s",
    )]


def bench_raw_io(work: Path, runs: int) -> list[Row]:
    father, mother = prepare_parents(work, "float32")
    sources = sorted(father.glob("*.safetensors")) + sorted(mother.glob("*.safetensors"))
    child_bytes = sum(path.stat().st_size for path in father.glob("*.safetensors"))
    target = work / "raw-io.bin"

    def raw():
        started = time.perf_counter()
        for path in sources:
            with open(path, "rb") as handle:
                while handle.read(64 * 1024 * 1024):
                    pass
        block = b"\0" * (64 * 1024 * 1024)
        with open(target, "wb") as handle:
            remaining = child_bytes
            while remaining > 0:
                handle.write(block[: min(remaining, len(block))])
                remaining -= len(block)
        return time.perf_counter() - started

    raw_seconds = min(raw() for _ in range(runs))
    command = [PYTHON, str(ROOT / "bench" / "inprocess.py"), "breed", str(father), str(mother), str(work / "ours-io")]
    breed_seconds = min(require_success(run_measured(command), "in-process breed").last_json()["seconds"] for _ in range(runs))
    ratio = breed_seconds / raw_seconds
    return [Row("linear breed vs raw file I/O (in process, imports excluded)", f"{breed_seconds:.2f} s", f"{raw_seconds:.2f} s",
                ratio, f"<= {RAW_IO_TARGET}x", ratio <= RAW_IO_TARGET)]


def bench_out_of_core(work: Path) -> list[Row]:
    result = require_success(run_measured([PYTHON, str(ROOT / "bench" / "inprocess.py"), "out-of-core", str(work / "ooc")]), "out-of-core breed")
    data = result.last_json()
    allowed = data["baseline_mb"] + 4 * data["largest_tensor_mb"]
    return [Row(
        "out-of-core breed: peak anonymous RSS",
        f"{data['peak_anon_mb']:.0f} MB",
        f"parent {data['parent_mb']:.0f} MB, " + (f"{data['cap_kind']} cap {data['cap_mb']:.0f} MB" if data["cap_kind"] else "no cap available"),
        data["peak_anon_mb"] / data["parent_mb"],
        f"<= start-up + 4 largest tensors ({allowed:.0f} MB)",
        data["peak_anon_mb"] <= allowed and data["finished"],
        f"largest tensor {data['largest_tensor_mb']:.0f} MB, start-up {data['baseline_mb']:.0f} MB",
    )]


def bench_candidates(quick: bool) -> list[Row]:
    rows = []
    result = require_success(run_measured([PYTHON, str(ROOT / "bench" / "inprocess.py"), "candidates"] + (["--quick"] if quick else [])), "candidate bench")
    data = result.last_json()
    rows.append(Row("one candidate merge, 135M, from loaded tensors", f"{data['merge_seconds']:.2f} s", "1 s target", data["merge_seconds"],
                    "<= 1 s", data["merge_seconds"] <= 1.0, f"DARE at density 0.5: {data['merge_dare_seconds']:.2f} s"))
    rows.append(Row("evolution generation, tiny family", f"{data['tiny_per_minute']:.0f} candidates/min", "30/min target", None,
                    ">= 30/min", data["tiny_per_minute"] >= 30))
    rows.append(Row("evolution generation, smollm2", f"{data['smollm2_per_minute']:.1f} candidates/min", "-", None, "-", None,
                    f"search split of {data['smollm2_items']} items"))
    return rows


def bench_mri() -> list[Row]:
    result = require_success(run_measured([PYTHON, str(ROOT / "bench" / "inprocess.py"), "mri"]), "MRI bench")
    data = result.last_json()
    total = data["static_seconds"] + data["probe_seconds"]
    return [Row("MRI scan of two 135M parents", f"{total:.1f} s", "60 s target", total / 60.0, "< 60 s", total < 60.0,
                f"static {data['static_seconds']:.1f} s, probes {data['probe_seconds']:.1f} s")]


def bench_help(runs: int) -> list[Row]:
    help_run = best_of(runs, lambda: require_success(run_measured(DARWIN + ["--help"]), "darwin --help"))
    return [Row("darwin --help start-up", f"{help_run.seconds:.2f} s", "1 s target", help_run.seconds, "< 1 s", help_run.seconds < 1.0)]


def write_benchmarks_md(rows: list[Row], machine: dict) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    marker_start, marker_end = "<!-- results:start -->", "<!-- results:end -->"
    block = (
        f"{marker_start}\nMeasured by `bench/run.py` on {machine['date']}: {machine['cpus']} CPUs, {machine['memory_gb']} GB, "
        f"Python {machine['python']}.\n\n{markdown_table(rows)}\n{marker_end}"
    )
    if marker_start in text:
        text = text.split(marker_start)[0] + block + text.split(marker_end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per figure and float32 only")
    parser.add_argument("--skip-mergekit", action="store_true", help="skip the mergekit comparison (no reference venv)")
    parser.add_argument("--work", help="folder for parents and children (default: a temporary folder)")
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="darwin-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    rows = bench_help(runs)
    rows += bench_raw_io(work, runs)
    references: dict = {}
    if not args.skip_mergekit:
        rows += bench_vs_mergekit(work, runs, ["float32"] if args.quick else ["float32", "bfloat16"], references)
    rows += bench_darwin_plan(work, runs, references.get(("dare_ties", "float32")))
    rows += bench_out_of_core(work)
    rows += bench_candidates(args.quick)
    rows += bench_mri()

    machine = machine_facts()
    print(format_table(rows))
    save_results(rows, machine)
    write_benchmarks_md(rows, machine)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
