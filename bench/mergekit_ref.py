"""mergekit as the reference merge tool: its own virtual environment, configs, and agreement checks.

The bench installs a pinned mergekit into `bench/.venv-mergekit` (outside git), with the same
torch release as the project, and runs its `mergekit-yaml` command on the same parent folders.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from common import ROOT

MERGEKIT_VERSION = "0.1.5"
VENV = ROOT / "bench" / ".venv-mergekit"


def ensure_mergekit() -> Path:
    """Create the reference environment once; return its `mergekit-yaml` executable."""
    executable = VENV / "bin" / "mergekit-yaml"
    if executable.is_file():
        return executable
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["torch==2.13.0", f"mergekit=={MERGEKIT_VERSION}"], check=True)
    return executable


def write_config(path: Path, method: str, father: Path, mother: Path, ratio: float, density: float, dtype: str) -> Path:
    """A mergekit config for one global ratio, matching our fixed-recipe semantics.

    Task-vector methods use the father as base model and `normalize: false`, which is what
    `darwin breed --method ties|dare_ties` computes without an explicit base: A + r * prune(B - A).
    """
    if method == "linear":
        config = {
            "merge_method": "linear",
            "models": [
                {"model": str(father), "parameters": {"weight": 1.0 - ratio}},
                {"model": str(mother), "parameters": {"weight": ratio}},
            ],
        }
    elif method == "slerp":
        config = {
            "merge_method": "slerp",
            "base_model": str(father),
            "models": [{"model": str(father)}, {"model": str(mother)}],
            "parameters": {"t": ratio},
        }
    else:
        config = {
            "merge_method": method,
            "base_model": str(father),
            "models": [{"model": str(mother), "parameters": {"weight": ratio, "density": density}}],
            "parameters": {"normalize": False},
        }
    config["dtype"] = dtype
    config["out_dtype"] = dtype
    # JSON is a subset of YAML, so mergekit-yaml reads this file as is.
    path.write_text(json.dumps(config, indent=2))
    return path


def mergekit_command(executable: Path, config: Path, out: Path) -> list[str]:
    return [str(executable), str(config), str(out), "--copy-tokenizer", "--out-shard-size", "5B", "--allow-crimes"]


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name)
    return tensors


def agreement(ours: Path, theirs: Path, father: Path, method: str) -> str:
    """Compare two children tensor by tensor: exact-within-tolerance for deterministic methods,
    kept fraction and mean task-vector ratio for DARE (the masks come from different generators)."""
    a, b, f = _tensors(ours), _tensors(theirs), _tensors(father)
    common = sorted(set(a) & set(b))
    missing = sorted(set(a) ^ set(b))
    if method != "dare_ties":
        worst = 0.0
        for name in common:
            difference = (a[name].float() - b[name].float()).abs().max().item()
            scale = b[name].float().abs().max().item() or 1.0
            worst = max(worst, difference / scale)
        note = f"max relative difference {worst:.2e} over {len(common)} tensors"
    else:
        kept_ours = kept_theirs = total = 0
        mean_ours = mean_theirs = 0.0
        for name in common:
            delta_ours = a[name].float() - f[name].float()
            delta_theirs = b[name].float() - f[name].float()
            kept_ours += int((delta_ours != 0).sum())
            kept_theirs += int((delta_theirs != 0).sum())
            total += delta_ours.numel()
            mean_ours += float(delta_ours.abs().sum())
            mean_theirs += float(delta_theirs.abs().sum())
        note = f"kept {kept_ours / total:.3f} vs {kept_theirs / total:.3f}; mean |delta| ratio {mean_ours / max(mean_theirs, 1e-12):.3f}"
    if missing:
        note += f"; {len(missing)} tensor names differ, e.g. {missing[0]}"
    return note
