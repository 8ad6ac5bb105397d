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


def run_measured(command: list[str], env: dict | None = None, cwd: Path | None = None) -> Measurement:
    """Run a command to completion; return its wall time and the peak RSS of the process (ru_maxrss).

    Output is kept for error messages. The peak covers the main process only; none of the
    measured commands start workers.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)
    output_chunks = []
    while True:
        chunk = process.stdout.read(65536)
        if not chunk:
            break
        output_chunks.append(chunk)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(seconds, usage.ru_maxrss / 1024, process.returncode, b"".join(output_chunks).decode(errors="replace"))


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
