"""Benchmarks that time steps inside one process; `bench/run.py` runs each in a fresh process.

Each subcommand prints one JSON line as its last output line.
"""

import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path


def _rss_anon_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"RssAnon:\s+(\d+) kB", text).group(1)) / 1024


class PeakSampler:
    """Samples this process's anonymous RSS every few milliseconds; file-backed pages of
    memory-mapped parents are page cache the kernel can drop, so they are not counted."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = _rss_anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon_mb())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon_mb())


def breed_linear(father: str, mother: str, out: str) -> dict:
    """The streaming linear breed alone: parents resolved (hashes cached) and libraries imported first."""
    from darwin_core.breed import BreedSettings, breed, prepare
    from darwin_core.plan import PlanSettings

    settings = BreedSettings(plan=PlanSettings(method="linear", ratio=0.5), run_health=False, eval_suites=())
    prepare(father, mother)  # warm the hash memo and imports outside the timed part
    started = time.perf_counter()
    breed(father, mother, out, settings=settings, overwrite=True)
    return {"seconds": time.perf_counter() - started}


def out_of_core(work: str) -> dict:
    """Breed two synthetic parents, each larger than the memory cap of the process."""
    import torch
    from safetensors.torch import save_file

    from darwin_core.breed import BreedSettings, breed
    from darwin_core.plan import PlanSettings

    work_path = Path(work)
    layers, tensor_elements = 12, 16 * 1024 * 1024  # 64 MiB float32 tensors, 2 per layer: 1.5 GiB per parent
    for name, seed in (("father", 0), ("mother", 1)):
        folder = work_path / name
        if (folder / "config.json").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(seed)
        weight_map = {}
        for layer in range(layers):
            shard = f"model-{layer + 1:05d}-of-{layers:05d}.safetensors"
            tensors = {
                f"model.layers.{layer}.mlp.up_proj.weight": torch.randn(4096, tensor_elements // 4096, generator=generator),
                f"model.layers.{layer}.mlp.down_proj.weight": torch.randn(tensor_elements // 4096, 4096, generator=generator),
            }
            save_file(tensors, folder / shard, metadata={"format": "pt"})
            weight_map.update({key: shard for key in tensors})
        index = {"metadata": {"total_size": layers * 2 * tensor_elements * 4}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers}))

    parent_mb = layers * 2 * tensor_elements * 4 / 2**20
    largest_mb = tensor_elements * 4 / 2**20
    baseline = _rss_anon_mb()
    cap_mb = 1024.0
    cap_kind = apply_memory_cap(int(cap_mb * 2**20))
    settings = BreedSettings(plan=PlanSettings(method="linear", ratio=0.5), run_health=False, eval_suites=(), max_shard_bytes=256 * 2**20)
    with PeakSampler() as sampler:
        breed(work_path / "father", work_path / "mother", work_path / "child", settings=settings, overwrite=True)
    return {
        "finished": (work_path / "child" / "darwin.json").is_file(),
        "parent_mb": parent_mb,
        "cap_mb": cap_mb if cap_kind else None,
        "cap_kind": cap_kind,
        "largest_tensor_mb": largest_mb,
        "baseline_mb": baseline,
        "peak_anon_mb": sampler.peak,
    }


def apply_memory_cap(limit_bytes: int) -> str | None:
    """Move this process into a new memory cgroup limited to `limit_bytes` (page cache included,
    which the kernel reclaims under the limit). Returns the kind of cgroup, or None when the
    machine does not let us create one."""
    pid = str(os.getpid())
    membership = Path("/proc/self/cgroup").read_text().splitlines()
    v1 = next((line.split(":", 2)[2] for line in membership if line.split(":")[1] == "memory"), None)
    candidates = []
    if v1 is not None:
        candidates.append((Path("/sys/fs/cgroup/memory") / v1.lstrip("/"), "memory.limit_in_bytes", "cgroup v1"))
    unified = next((line.split(":", 2)[2] for line in membership if line.startswith("0::")), None)
    if unified is not None:
        for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
            candidates.append((root / unified.lstrip("/"), "memory.max", "cgroup v2"))
    for parent, limit_file, kind in candidates:
        group = parent / f"darwin-bench-{pid}"
        try:
            group.mkdir()
            (group / limit_file).write_text(str(limit_bytes))
            (group / "cgroup.procs").write_text(pid)
            return kind
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def candidates(quick: bool) -> dict:
    """One in-memory candidate merge of 135M parents, and evolution generations on both families."""
    from darwin_core.breed import BreedSettings
    from darwin_core.evolve import Evolution, EvolveSettings
    from darwin_core.genome import Genome

    breed_settings = BreedSettings(run_health=False, eval_suites=())
    smol = Evolution(
        "embedded:smollm2-135m-instruct", "embedded:smollm2-arith",
        settings=EvolveSettings(population=4 if quick else 8, generations=1, suites=(("arith", 1.0), ("general", 1.0)), max_items=24),
        breed_settings=breed_settings,
    )
    evaluator = smol.evaluator()
    inventory, ratios = evaluator.context.inventory, evaluator.context.ratios

    from darwin_core.plan import build_plan

    timings = {}
    for label, genome in (("merge", Genome(global_ratio=0.45)), ("merge_dare", Genome(global_ratio=0.55, density_b=0.5))):
        evaluator.apply(build_plan(inventory, Genome(global_ratio=0.3), breed_settings.plan, ratios))
        started = time.perf_counter()
        evaluator.apply(build_plan(inventory, genome, breed_settings.plan, ratios))
        timings[label] = time.perf_counter() - started

    def per_minute(evolution) -> float:
        evolution.evaluator()  # scan and load once, outside the timing
        started = time.perf_counter()
        result = evolution.run()
        return len(result.candidates) / (time.perf_counter() - started) * 60.0

    tiny = Evolution("embedded:tiny-arith", "embedded:tiny-reverse", settings=EvolveSettings(population=8, generations=1 if quick else 2),
                     breed_settings=breed_settings)
    return {
        "merge_seconds": timings["merge"],
        "merge_dare_seconds": timings["merge_dare"],
        "tiny_per_minute": per_minute(tiny),
        "smollm2_per_minute": per_minute(smol),
        "smollm2_items": sum(len(items) for _, _, items in evaluator.context.suites if items),
    }


def mri() -> dict:
    """Static and probe terms of the MRI for two 135M parents, without the cache."""
    from darwin_core.breed import prepare
    from darwin_core.mri import MriSettings, probe_scan, static_scan
    from darwin_core.probes import load_probes

    father, mother, base, mapping = prepare("embedded:smollm2-135m-instruct", "embedded:smollm2-arith")
    started = time.perf_counter()
    static_scan(father, mother, base, MriSettings(), mapping=mapping)
    static_seconds = time.perf_counter() - started
    started = time.perf_counter()
    probe_scan(father, mother, load_probes(), MriSettings())
    return {"static_seconds": static_seconds, "probe_seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("breed", "out-of-core", "candidates", "mri"))
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.what == "breed":
        result = breed_linear(*args.paths)
    elif args.what == "out-of-core":
        result = out_of_core(*args.paths)
    elif args.what == "candidates":
        result = candidates(args.quick)
    else:
        result = mri()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
