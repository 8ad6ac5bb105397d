"""Health check and quick eval of a written child against its parents.

Parent results never change for a given parent file and suite, so they are cached under
`<cache>/eval/` and `<cache>/profiles/` and reused by every later child of the same parents.
"""

import hashlib
import json
import logging
import os
from pathlib import Path

from .evaluate import SuiteScore, load_suite, score_model, suite_digest, suite_report
from .harness import HarnessSuite, is_harness_suite
from .health import HealthReport, check_health
from .modeling import load_model
from .parents import Parent
from .paths import cache_dir
from .probes import ProbeProfile, load_probes, probe_profile

logger = logging.getLogger(__name__)

EVAL_CACHE_VERSION = "1"


def _cache_file(kind: str, material: dict) -> Path:
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / kind / f"{key}.json"


def _write_cache(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def score_suite(model, tokenizer, suite: str, split: str, *, quiet: bool = True) -> SuiteScore:
    """Score on a JSONL suite, or on an lm-evaluation-harness task named `lm_eval:TASK`."""
    if is_harness_suite(suite):
        return HarnessSuite(suite, split).score(model, tokenizer)
    return score_model(model, tokenizer, load_suite(suite, split), quiet=quiet)


def parent_score(parent: Parent, suite: str, split: str, *, quiet: bool = True, model_and_tokenizer=None) -> SuiteScore:
    """Score a parent on a suite split, reusing the cached result for the same files and JSONL suite."""
    cacheable = bool(parent.sources) and not is_harness_suite(suite)
    path = None
    if cacheable:
        material = {"v": EVAL_CACHE_VERSION, "parent": parent.sources, "suite": suite_digest(suite), "split": split}
        path = _cache_file("eval", material)
        if path.is_file():
            return SuiteScore(**json.loads(path.read_text()))
    model, tokenizer = model_and_tokenizer or load_model(parent.folder)
    score = score_suite(model, tokenizer, suite, split, quiet=quiet)
    if cacheable:
        _write_cache(path, {"item_ids": score.item_ids, "skills": score.skills, "correct": score.correct, "predictions": score.predictions})
    return score


def parent_profile(parent: Parent, probes: dict[str, list[str]], max_tokens: int) -> ProbeProfile:
    """Probe profile of a parent, cached like its scores."""
    material = {"v": EVAL_CACHE_VERSION, "parent": parent.sources, "probes": probes, "max_tokens": max_tokens}
    path = _cache_file("profiles", material)
    if parent.sources and path.is_file():
        return ProbeProfile.from_dict(json.loads(path.read_text()))
    model, tokenizer = load_model(parent.folder)
    profile = probe_profile(model, tokenizer, probes, max_tokens)
    if parent.sources:
        _write_cache(path, profile.to_dict())
    return profile


def child_health(folder: Path, father: Parent, mother: Parent, mri, nonfinite: list[str], settings, *, quiet: bool = True) -> HealthReport:
    """Load the written child, probe it and compare it with the parents' profiles."""
    probes = load_probes(settings.mri.probes_folder)
    if mri is not None:
        father_profile, mother_profile = mri.probe_a, mri.probe_b
    else:
        father_profile = parent_profile(father, probes, settings.mri.max_probe_tokens)
        mother_profile = parent_profile(mother, probes, settings.mri.max_probe_tokens)
    model, tokenizer = load_model(folder)
    child_profile = probe_profile(model, tokenizer, probes, settings.mri.max_probe_tokens)
    return check_health(child_profile, father_profile, mother_profile, nonfinite, settings.health)


def evaluate_child(folder: Path, father: Parent, mother: Parent, suites, split: str, *, quiet: bool = True) -> dict:
    """Quick eval of father, mother and child on each suite split, in the `darwin eval --json` form."""
    model, tokenizer = load_model(folder)
    reports = []
    for suite in suites:
        child = score_suite(model, tokenizer, suite, split, quiet=quiet)
        named = [
            (father.ref, parent_score(father, suite, split, quiet=quiet)),
            (mother.ref, parent_score(mother, suite, split, quiet=quiet)),
            ("child", child),
        ]
        reports.append(suite_report(suite, split, named))
    return {"split": split, "suites": reports}
