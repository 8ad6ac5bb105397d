"""MRI (model reasoning importance) of a parent pair.

Static term, per tensor per parent, no data needed: the normalised entropy of the |w|
histogram (entropy divided by log(bins)), the standard deviation and the RMS of the weights.
Each statistic is min-max normalised over the tensors of both parents together, then the three
are averaged.

Probe term, per layer per parent: block influence on each probe family (see `probes`),
averaged over families with user weights, then divided by the largest value over both parents
so it lies in [0, 1] and a layer that does nothing stays at 0.

Combined: MRI(T) = 0.4 * static(T) + 0.6 * probe(layer(T)); tensors outside the decoder layers
have no probe term and use their static term alone. The MRI ratio is
r_MRI(T) = MRI_B(T) / (MRI_A(T) + MRI_B(T)), and 0.5 where both are about 0.

For siblings the two MRI scores are close, so the report also keeps what tells them apart:
each parent's task-vector norm per tensor (relative to the base, or to the other parent when
no base is given) and the cosine between the two task vectors per layer.
"""

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .inventory import build_inventory, proportional_layer_map
from .modeling import load_model
from .parents import Parent
from .paths import cache_dir
from .probes import MAX_PROBE_TOKENS, ProbeProfile, load_probes, probe_profile, weighted_influence

logger = logging.getLogger(__name__)

MRI_VERSION = "2"
_CHUNK_ELEMENTS = 1 << 22
_BOTH_ZERO = 1e-12


@dataclass(frozen=True)
class MriSettings:
    """How static and probe terms are measured and combined; `family_weights` default to 1 each."""

    static_weight: float = 0.4
    probe_weight: float = 0.6
    histogram_bins: int = 256
    max_probe_tokens: int = MAX_PROBE_TOKENS
    probes_folder: str | None = None
    family_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.static_weight < 0 or self.probe_weight < 0 or self.static_weight + self.probe_weight <= 0:
            raise ValueError(
                f"MRI weights must be non-negative with a positive sum, got static {self.static_weight} and probe {self.probe_weight}"
            )
        if self.histogram_bins < 2:
            raise ValueError(f"histogram_bins must be at least 2, got {self.histogram_bins}")
        for family, weight in self.family_weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"probe family weight for {family} must be a non-negative number, got {weight}")


def tensor_statistics(tensor: torch.Tensor, bins: int) -> dict[str, float]:
    """Normalised |w| histogram entropy, standard deviation and RMS, computed in chunks.

    `nonfinite` counts NaN and Inf entries; the statistics are taken over the finite ones.
    """
    flat = tensor.reshape(-1)
    count = flat.numel()
    if count == 0 or not tensor.is_floating_point():
        return {"entropy": 0.0, "std": 0.0, "rms": 0.0, "nonfinite": 0}
    nonfinite = int((~torch.isfinite(flat)).sum())
    if nonfinite:
        flat = torch.nan_to_num(flat.float(), nan=0.0, posinf=0.0, neginf=0.0)
    total = total_squares = 0.0
    maximum = 0.0
    for start in range(0, count, _CHUNK_ELEMENTS):
        chunk = flat[start : start + _CHUNK_ELEMENTS].double()
        total += float(chunk.sum())
        total_squares += float((chunk * chunk).sum())
        maximum = max(maximum, float(chunk.abs().max()))
    mean = total / count
    variance = max(total_squares / count - mean * mean, 0.0)

    histogram = torch.zeros(bins, dtype=torch.float64)
    if maximum > 0:
        for start in range(0, count, _CHUNK_ELEMENTS):
            chunk = flat[start : start + _CHUNK_ELEMENTS].float().abs()
            histogram += torch.histc(chunk, bins=bins, min=0.0, max=maximum).double()
    probabilities = histogram[histogram > 0] / count
    entropy = float(-(probabilities * probabilities.log()).sum()) / math.log(bins)
    return {
        "entropy": entropy,
        "std": math.sqrt(variance * count / max(count - 1, 1)),
        "rms": math.sqrt(total_squares / count),
        "nonfinite": nonfinite,
    }


def _minmax(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    return low, (high - low) if high > low else 1.0


@dataclass
class MriReport:
    """Raw MRI measurements of a parent pair; scores and ratios are derived on demand."""

    father: str
    mother: str
    base: str | None
    num_layers: int
    settings: dict
    tensors: dict[str, dict]
    probe_a: ProbeProfile
    probe_b: ProbeProfile
    task_cosine: list[float | None]

    # --- derived scores -----------------------------------------------------------------

    def static_scores(self) -> dict[str, tuple[float, float]]:
        """Per tensor (static_A, static_B), each statistic min-max normalised over both parents."""
        ranges = {}
        for statistic in ("entropy", "std", "rms"):
            values = [entry[side][statistic] for entry in self.tensors.values() for side in ("a", "b")]
            ranges[statistic] = _minmax(values)
        scores = {}
        for name, entry in self.tensors.items():
            pair = []
            for side in ("a", "b"):
                normalised = [(entry[side][s] - ranges[s][0]) / ranges[s][1] for s in ("entropy", "std", "rms")]
                pair.append(sum(normalised) / 3.0)
            scores[name] = (pair[0], pair[1])
        return scores

    def probe_scores(self, family_weights: dict[str, float] | None = None) -> tuple[list[float], list[float]]:
        """Per layer probe term of each parent, scaled by the largest value over both parents.

        A mother of another depth is read at the proportionally aligned layer of each father layer.
        """
        weights = family_weights if family_weights is not None else self.settings.get("family_weights") or {}
        a = weighted_influence(self.probe_a, weights)
        b = weighted_influence(self.probe_b, weights)
        if len(b) != len(a):
            b = [b[layer] for layer in proportional_layer_map(len(a), len(b))]
        scale = max([*a, *b, _BOTH_ZERO])
        return [max(value, 0.0) / scale for value in a], [max(value, 0.0) / scale for value in b]

    def combined_scores(self, family_weights: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
        static = self.static_scores()
        probe_a, probe_b = self.probe_scores(family_weights)
        static_weight, probe_weight = self.settings["static_weight"], self.settings["probe_weight"]
        combined = {}
        for name, entry in self.tensors.items():
            layer = entry["layer"]
            if layer is None or layer >= len(probe_a):
                combined[name] = static[name]
                continue
            total = static_weight + probe_weight
            combined[name] = (
                (static_weight * static[name][0] + probe_weight * probe_a[layer]) / total,
                (static_weight * static[name][1] + probe_weight * probe_b[layer]) / total,
            )
        return combined

    def ratios(self, family_weights: dict[str, float] | None = None) -> dict[str, float]:
        """r_MRI per tensor: the mother's share of the two MRI scores, 0.5 where both are about 0."""
        ratios = {}
        for name, (score_a, score_b) in self.combined_scores(family_weights).items():
            total = score_a + score_b
            ratios[name] = 0.5 if not math.isfinite(total) or total < _BOTH_ZERO else score_b / total
        return ratios

    def nonfinite_tensors(self) -> dict[str, dict[str, int]]:
        """Tensors holding NaN or Inf in a parent: name -> {"father": count, "mother": count}."""
        found = {}
        for name, entry in self.tensors.items():
            counts = {"father": entry["a"].get("nonfinite", 0), "mother": entry["b"].get("nonfinite", 0)}
            if any(counts.values()):
                found[name] = counts
        return found

    def summary(self, family_weights: dict[str, float] | None = None) -> dict:
        """Mean r_MRI overall and per component, for cards and logs."""
        ratios = self.ratios(family_weights)
        by_component: dict[str, list[float]] = {}
        for name, ratio in ratios.items():
            by_component.setdefault(self.tensors[name]["component"], []).append(ratio)
        return {
            "mean_ratio": sum(ratios.values()) / max(len(ratios), 1),
            "by_component": {component: sum(v) / len(v) for component, v in sorted(by_component.items())},
            "mean_task_cosine": _mean([c for c in self.task_cosine if c is not None]),
        }

    # --- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        data["probe_a"] = self.probe_a.to_dict()
        data["probe_b"] = self.probe_b.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "MriReport":
        data = dict(data)
        data["probe_a"] = ProbeProfile.from_dict(data["probe_a"])
        data["probe_b"] = ProbeProfile.from_dict(data["probe_b"])
        return cls(**data)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _cache_key(father: Parent, mother: Parent, base: Parent | None, settings: MriSettings, probes: dict) -> str:
    material = {
        "version": MRI_VERSION,
        "father": father.sources,
        "mother": mother.sources,
        "base": base.sources if base else None,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("family_weights", "probes_folder")},
        "probes": probes,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def scan(
    father: Parent,
    mother: Parent,
    base: Parent | None = None,
    settings: MriSettings = MriSettings(),
    *,
    use_cache: bool = True,
    quiet: bool = True,
    mapping=None,
) -> MriReport:
    """Measure both parents: static statistics per tensor, probe profiles per layer, task vectors.

    Results are cached under `<cache>/mri/` by the parents' file hashes, the probe texts and the
    settings, so a second scan of the same pair (in a later breed or evolution) is free.
    """
    probes = load_probes(settings.probes_folder)
    key = _cache_key(father, mother, base, settings, probes)
    cache_path = cache_dir() / "mri" / f"{key}.json"
    if use_cache and cache_path.is_file() and father.sources and mother.sources:
        report = MriReport.from_dict(json.loads(cache_path.read_text()))
        report.father, report.mother, report.base = father.ref, mother.ref, base.ref if base else None
        report.settings["family_weights"] = dict(settings.family_weights)
        return report

    tensors, task_cosine, num_layers = static_scan(father, mother, base, settings, mapping=mapping, quiet=quiet)
    profiles = probe_scan(father, mother, probes, settings)
    report = MriReport(
        father=father.ref,
        mother=mother.ref,
        base=base.ref if base else None,
        num_layers=num_layers,
        settings=asdict(settings),
        tensors=tensors,
        probe_a=profiles[0],
        probe_b=profiles[1],
        task_cosine=task_cosine,
    )
    if father.sources and mother.sources:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(report.to_dict()))
        temporary.replace(cache_path)
    return report


def static_scan(father: Parent, mother: Parent, base: Parent | None, settings: MriSettings, *, mapping=None, quiet: bool = True):
    """Per tensor statistics of both parents and their task vectors; returns (tensors, task_cosine, num_layers)."""
    inventory = build_inventory(father.checkpoint.tensors, father.config)
    num_layers = max((slot.layer for slot in inventory.values() if slot.layer is not None), default=-1) + 1
    tensors: dict[str, dict] = {}
    layer_dot = [0.0] * num_layers
    layer_norm_a = [0.0] * num_layers
    layer_norm_b = [0.0] * num_layers

    if mapping is None:
        from .compat import check_parents
        from .mapping import identity_mapping

        mapping = identity_mapping(check_parents(father, mother, base), father, base)
    # Tensors a crossbreed keeps from the father are scanned too, so the cached report does not
    # depend on the crossbreed mode; only tensors without a partner are left out.
    names = [name for name in inventory if name in mapping.mother]
    for name in tqdm(names, desc="MRI static scan", disable=quiet, leave=False):
        slot = inventory[name]
        tensor_a = father.checkpoint.get(name)
        tensor_b = mapping.partner(mother.checkpoint, name, tensor_a, "mother")
        if tensor_b is None or tensor_a.shape != tensor_b.shape:
            continue
        entry = {
            "component": slot.component.value,
            "layer": slot.layer,
            "a": tensor_statistics(tensor_a, settings.histogram_bins),
            "b": tensor_statistics(tensor_b, settings.histogram_bins),
        }

        # Task vectors relative to the base, or to the other parent when there is none.
        base_tensor = mapping.partner(base.checkpoint, name, tensor_a, "base") if base is not None else None
        if base_tensor is not None:
            anchor = base_tensor.float()
            delta_a, delta_b = tensor_a.float() - anchor, tensor_b.float() - anchor
            reference = float(anchor.norm())
        else:
            delta_b = tensor_b.float() - tensor_a.float()
            delta_a = -delta_b
            reference = float(tensor_a.float().norm())
        norm_a, norm_b = float(delta_a.norm()), float(delta_b.norm())
        if not math.isfinite(norm_a + norm_b):
            norm_a = norm_b = 0.0  # a parent holds NaN or Inf here; `nonfinite` reports it
        entry["task_norm_a"] = norm_a / reference if reference > 0 else 0.0
        entry["task_norm_b"] = norm_b / reference if reference > 0 else 0.0
        if base_tensor is not None and slot.layer is not None and slot.layer < num_layers:
            layer_dot[slot.layer] += float((delta_a * delta_b).sum())
            layer_norm_a[slot.layer] += norm_a**2
            layer_norm_b[slot.layer] += norm_b**2
        tensors[name] = entry

    task_cosine: list[float | None] = [
        (dot / math.sqrt(na * nb)) if na > 0 and nb > 0 else None
        for dot, na, nb in zip(layer_dot, layer_norm_a, layer_norm_b)
    ]
    return tensors, task_cosine, num_layers


def probe_scan(father: Parent, mother: Parent, probes: dict[str, list[str]], settings: MriSettings) -> list[ProbeProfile]:
    """Probe profiles of both parents, one model in memory at a time."""
    profiles = []
    for parent in (father, mother):
        logger.info("probing %s with %d probe families", parent.ref, len(probes))
        model, tokenizer = load_model(parent.folder)
        profiles.append(probe_profile(model, tokenizer, probes, settings.max_probe_tokens))
        del model
    return profiles


def load_report(path: str | Path) -> MriReport:
    return MriReport.from_dict(json.loads(Path(path).read_text()))
