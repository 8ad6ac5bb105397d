"""Shared pieces of the benchmarks: timed subprocesses with peak memory, and the results table."""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable


@dataclass
class Measurement:
    seconds: float
    peak_rss_mb: float
    returncode: int
    output: str
    stdout: str = ""

    def last_json(self) -> dict:
        """The JSON object on the last line of the command's standard output."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_measured(command: list[str], env: dict | None = None, cwd: Path | None = None) -> Measurement:
    """Run a command to completion through `bench/measure.py`; return its wall time and peak RSS.

    Output is kept for error messages. The peak covers the command's own process; none of the
    measured commands start workers.
    """
    launcher = [sys.executable, str(ROOT / "bench" / "measure.py")]
    result = subprocess.run(launcher + command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=cwd)
    stderr = result.stderr.decode(errors="replace")
    facts = json.loads(stderr.strip().splitlines()[-1])
    output = result.stdout.decode(errors="replace") + stderr
    return Measurement(facts["seconds"], facts["peak_rss_mb"], facts["returncode"], output, result.stdout.decode(errors="replace"))


def require_success(measurement: Measurement, what: str) -> Measurement:
    if measurement.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {measurement.returncode}:\n{measurement.output[-3000:]}")
    return measurement


def best_of(runs: int, measure) -> Measurement:
    """The fastest of several runs (the others absorb cold caches and machine noise)."""
    results = [measure() for _ in range(runs)]
    return min(results, key=lambda m: m.seconds)


@dataclass
class Row:
    """One line of the results table: what was measured, our figure, the reference, their ratio, the target."""

    benchmark: str
    ours: str
    reference: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""

    def cells(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        verdict = "-" if self.passed is None else ("pass" if self.passed else "MISS")
        return [self.benchmark, self.ours, self.reference, ratio, self.target, verdict, self.note]


HEADERS = ["benchmark", "ours", "reference", "ratio", "target", "verdict", "note"]


def format_table(rows: list[Row]) -> str:
    widths = [max(len(HEADERS[i]), *(len(row.cells()[i]) for row in rows)) for i in range(len(HEADERS))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row.cells(), widths)) for row in rows]
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "| " + " | ".join("---" for _ in HEADERS) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def save_results(rows: list[Row], machine: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "results.json"
    path.write_text(json.dumps({"machine": machine, "rows": [asdict(row) for row in rows]}, indent=2))
    return path


def machine_facts() -> dict:
    import platform

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }
