"""Breed a child: resolve and check the parents, scan them, plan, merge, check, evaluate, record.

Streaming breed reads one tensor at a time from each parent and writes the child's safetensors
as it goes, so memory holds a few tensors whatever the model size. Everything is written into a
hidden temporary folder beside the output; `darwin.json` is written last, with the SHA-256 of
every weight file, and the folder is then renamed into place. A failure or a cancel removes the
temporary folder, so a folder at the output path is always a complete child.
"""

import json
import logging
import os
import platform
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .card import card_body, card_metadata, choose_license, read_front_matter_license, reproduce_command
from .checkpoint import INDEX_NAME, SINGLE_NAME, PlannedTensor, SafetensorsStreamWriter, plan_shards
from .compat import CompatibilityReport, check_parents
from .errors import DarwinError, ParentError
from .genome import Genome, LayerRatios
from .hashing import sha256_file
from .health import HealthReport, HealthSettings
from .inventory import build_inventory
from .mapper import MapperSettings, build_mapping, same_vocabulary
from .mapping import TensorMapping, identity_mapping
from .memory import return_large_blocks_to_the_os
from .merge import merge_tensor
from .mri import MriReport, MriSettings, scan
from .outputs import RECORD_NAME, check_output, move_into_place, out_of_space_error, remove_stale_partials, temporary_folder
from .parents import Parent, copy_tokenizer_files, embedded_registry, resolve_parent
from .plan import MergePlan, PlanSettings, build_plan

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
CONFIG_FILES = ("config.json", "generation_config.json")


class BreedCancelled(DarwinError):
    """The user cancelled the breed; nothing was written."""


@dataclass(frozen=True)
class BreedSettings:
    """Everything besides parents and genome that decides the child.

    `eval_suites` None means the suites the embedded registry lists for the father's family
    (none for other parents); an empty tuple skips the quick eval. `mapper` decides how parents
    of different layouts pair, and sets the FFN crossbreed mode.
    """

    seed: int = 0
    plan: PlanSettings = field(default_factory=PlanSettings)
    mapper: MapperSettings = field(default_factory=MapperSettings)
    mri: MriSettings = field(default_factory=MriSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    eval_suites: tuple[str, ...] | None = None
    eval_split: str = "test"
    run_health: bool = True
    allow_nonfinite_parents: bool = False

    def __post_init__(self):
        if self.max_shard_bytes < 1:
            raise DarwinError(f"max_shard_bytes must be positive, got {self.max_shard_bytes}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["eval_suites"] = list(self.eval_suites) if self.eval_suites is not None else None
        return data


@dataclass
class BreedResult:
    out: Path
    plan: MergePlan
    record: dict
    health: HealthReport | None
    compatibility: object

    def summary(self) -> dict:
        """The `darwin breed --json` object: output folder, plan counts, health and eval."""
        return {
            "out": str(self.out),
            "plan": {key: self.record["plan"][key] for key in ("method", "transplant_a", "transplant_b", "blended", "mean_ratio")},
            "health": {"verdict": self.health.verdict, "reasons": self.health.reasons} if self.health else {"verdict": "skipped"},
            "eval": self.record.get("eval"),
            "generation": self.record["generation"],
        }


def as_parent(reference: str | Parent | None, allow_pickle: bool = False) -> Parent | None:
    if reference is None or isinstance(reference, Parent):
        return reference
    return resolve_parent(reference, allow_pickle=allow_pickle)


def default_suites(father: Parent) -> tuple[str, ...]:
    """Suites of the father's embedded family, or the ones its own lineage record was scored on."""
    if father.ref.startswith("embedded:"):
        entry = embedded_registry().get(father.ref.removeprefix("embedded:"))
        if entry:
            return tuple(entry.get("suites", ()))
    if father.lineage and father.lineage.get("eval"):
        return tuple(suite["suite"] for suite in father.lineage["eval"].get("suites", []))
    return ()


def prepare(
    father: str | Parent,
    mother: str | Parent,
    base: str | Parent | None = None,
    settings: MapperSettings = MapperSettings(),
    *,
    allow_pickle: bool = False,
) -> tuple[Parent, Parent, Parent | None, TensorMapping]:
    """Resolve the parents and pair their tensors from the headers and tokenizers, before any weight is read.

    Parents of one layout and vocabulary pair by name. Any other pair goes through the
    Architecture Mapper, which raises `MatchError` (an `IncompatibleParentsError`) with its
    report when too few tensors pair. `allow_pickle` lets local folders with only pickled
    weights be converted (see `parents.resolve_parent`).
    """
    father, mother, base = (as_parent(ref, allow_pickle) for ref in (father, mother, base))
    report = check_parents(father, mother, base)
    if report.compatible and settings.crossbreed is None and same_vocabulary(father, mother, base):
        return father, mother, base, identity_mapping(report, father, base)
    return father, mother, base, build_mapping(father, mother, base, settings)


def make_plan(
    father: Parent,
    genome: Genome,
    settings: BreedSettings,
    mri: MriReport | None,
    layers: LayerRatios | None = None,
    mapping: TensorMapping | None = None,
) -> MergePlan:
    inventory = build_inventory(father.checkpoint.tensors, father.config)
    if layers is not None:
        layers.check_layers(max((s.layer for s in inventory.values() if s.layer is not None), default=-1) + 1)
    ratios = mri.ratios(settings.mri.family_weights or None) if mri is not None else None
    return build_plan(inventory, genome, settings.plan, ratios, layers, forced=mapping.forced if mapping else None)


def _planned_tensors(father: Parent) -> list[PlannedTensor]:
    return [PlannedTensor(name, info.dtype, info.shape) for name, info in sorted(father.checkpoint.tensors.items())]


def write_child_weights(
    folder: Path,
    father: Parent,
    mother: Parent,
    base: Parent | None,
    plan: MergePlan,
    settings: BreedSettings,
    mapping: TensorMapping,
    *,
    quiet: bool = True,
    cancel: threading.Event | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Stream every tensor through the plan into safetensors shards.

    Returns the tensors holding NaN or Inf, and the SHA-256 of every weight file written.
    """
    return_large_blocks_to_the_os()
    planned = _planned_tensors(father)
    shards = plan_shards(planned, settings.max_shard_bytes)
    names = (
        [SINGLE_NAME]
        if len(shards) == 1
        else [f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors" for index in range(len(shards))]
    )
    nonfinite: list[str] = []
    weight_map: dict[str, str] = {}
    digests: dict[str, str] = {}
    with tqdm(total=len(planned), desc="breeding", unit="tensor", disable=quiet) as progress:
        for shard, file_name in zip(shards, names):
            writer = SafetensorsStreamWriter(folder / file_name, shard)
            try:
                for tensor in shard:
                    if cancel is not None and cancel.is_set():
                        raise BreedCancelled("breed cancelled; no child was written")
                    father_tensor = father.checkpoint.get(tensor.name)
                    mother_tensor = mapping.partner(mother.checkpoint, tensor.name, father_tensor, "mother")
                    base_tensor = mapping.partner(base.checkpoint, tensor.name, father_tensor, "base") if base is not None else None
                    child = merge_tensor(
                        plan.entries[tensor.name], father_tensor, mother_tensor, base_tensor, plan.method, settings.seed, settings.plan
                    )
                    writer.write(tensor.name, child)
                    weight_map[tensor.name] = file_name
                    progress.update(1)
                writer.close()
                digests[file_name] = writer.sha256
                nonfinite += writer.nonfinite
                if writer.nonfinite and not settings.allow_nonfinite_parents:
                    name = writer.nonfinite[0]
                    father_tensor = father.checkpoint.get(name)
                    partners = [(father, father_tensor), (mother, mapping.partner(mother.checkpoint, name, father_tensor, "mother"))]
                    if base is not None:
                        partners.append((base, mapping.partner(base.checkpoint, name, father_tensor, "base")))
                    _reject_nonfinite_parent(name, *partners)
            except BaseException:
                writer.abort()
                raise
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in planned)}, "weight_map": weight_map}
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        digests[INDEX_NAME] = sha256_file(folder / INDEX_NAME)
    return nonfinite, digests


def _reject_nonfinite_report(mri: MriReport, father: Parent, mother: Parent) -> None:
    """Stop before writing when the MRI scan found NaN or Inf values in a parent."""
    found = mri.nonfinite_tensors()
    if not found:
        return
    name, counts = next(iter(found.items()))
    role = "father" if counts["father"] else "mother"
    parent = father if role == "father" else mother
    more = f" ({len(found)} tensors in all)" if len(found) > 1 else ""
    raise ParentError(
        f"{name} holds {counts[role]} NaN or Inf values in the {role} ({parent.ref}){more}; the child would inherit them. "
        "Repair that checkpoint, or pass --allow-nonfinite to breed anyway (the health check then fails)."
    )


def _reject_nonfinite_parent(name: str, *pairs) -> None:
    """Name the parent whose tensor already holds NaN or Inf values, so the child would inherit them.

    When no parent does (the merge itself overflowed), the child keeps the tensor and the health
    check reports it.
    """
    for role, (parent, tensor) in zip(("father", "mother", "base"), pairs):
        if parent is None or tensor is None or not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ParentError(
                f"{name} holds {bad} NaN or Inf values in the {role} ({parent.ref}); the child would inherit them. "
                "Repair that checkpoint, or pass --allow-nonfinite to breed anyway (the health check then fails)."
            )


def copy_model_files(father: Parent, folder: Path) -> list[str]:
    """Copy the father's config, generation config, tokenizer and chat template into the child."""
    copied = []
    for name in CONFIG_FILES:
        if (father.folder / name).is_file():
            shutil.copy2(father.folder / name, folder / name)
            copied.append(name)
    copied += copy_tokenizer_files(father.folder, folder)
    return copied


def software_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"darwin_studio": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("transformers", "safetensors", "huggingface_hub"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def breed(
    father: str | Parent,
    mother: str | Parent,
    out: str | Path,
    *,
    base: str | Parent | None = None,
    genome: Genome | None = None,
    layers: LayerRatios | None = None,
    settings: BreedSettings = BreedSettings(),
    overwrite: bool = False,
    quiet: bool = True,
    cancel: threading.Event | None = None,
    command: str | None = None,
    mri: MriReport | None = None,
    allow_pickle: bool = False,
) -> BreedResult:
    """Breed a child of two parents into `out` and return its plan, record and health report."""
    genome = genome or Genome()
    out = Path(out)
    father, mother, base, mapping = prepare(father, mother, base, settings.mapper, allow_pickle=allow_pickle)

    needed_bytes = sum(t.nbytes for t in _planned_tensors(father)) + 64 * 1024 * 1024
    remove_stale_partials(out)
    check_output(out, needed_bytes, overwrite)

    # Scan and plan before anything is written: the plan needs only headers and the MRI.
    if mri is None and settings.plan.method == "darwin":
        mri = scan(father, mother, base, settings.mri, quiet=quiet, mapping=mapping)
    if mri is not None and not settings.allow_nonfinite_parents:
        _reject_nonfinite_report(mri, father, mother)
    plan = make_plan(father, genome, settings, mri, layers, mapping)
    logger.info("plan for %s x %s: %s", father.ref, mother.ref, plan.counts())

    from .hub import import_card_support

    threading.Thread(target=import_card_support, name="import huggingface_hub", daemon=True).start()
    folder = temporary_folder(out)
    try:
        nonfinite, digests = write_child_weights(folder, father, mother, base, plan, settings, mapping, quiet=quiet, cancel=cancel)
        copy_model_files(father, folder)

        health = None
        if settings.run_health:
            from .quick import child_health

            health = child_health(folder, father, mother, mri, nonfinite, settings, quiet=quiet)
        suites = settings.eval_suites if settings.eval_suites is not None else default_suites(father)
        evaluation = None
        if suites:
            from .quick import evaluate_child

            evaluation = evaluate_child(folder, father, mother, suites, settings.eval_split, quiet=quiet)

        record = build_record(
            folder, out.name, father, mother, base, genome, layers, settings, plan, mri, health, evaluation, command, digests,
            mapping.report,
        )
        if cancel is not None and cancel.is_set():
            raise BreedCancelled("breed cancelled; no child was written")
        move_into_place(folder, out)
    except OSError as error:
        shutil.rmtree(folder, ignore_errors=True)
        translated = out_of_space_error(error, out, needed_bytes)
        if translated is not None:
            raise translated from None
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info("child written to %s (health %s)", out, health.verdict if health else "skipped")
    return BreedResult(out=out, plan=plan, record=record, health=health, compatibility=mapping.report)


def build_record(
    folder: Path,
    name: str,
    father: Parent,
    mother: Parent,
    base: Parent | None,
    genome: Genome,
    layers: LayerRatios | None,
    settings: BreedSettings,
    plan: MergePlan,
    mri: MriReport | None,
    health: HealthReport | None,
    evaluation: dict | None,
    command: str | None,
    digests: dict[str, str],
    match_report=None,
) -> dict:
    """Write the model card, then `darwin.json` last, with the checksum of every weight file."""
    registry = embedded_registry()

    def parent_record(parent: Parent) -> dict:
        record = parent.to_record()
        entry = registry.get(parent.ref.removeprefix("embedded:")) if parent.ref.startswith("embedded:") else None
        if entry and entry.get("hub_id"):
            record["hub_id"] = entry["hub_id"]
        return record

    def parent_license(parent: Parent) -> str | None:
        entry = registry.get(parent.ref.removeprefix("embedded:")) if parent.ref.startswith("embedded:") else None
        if entry:
            return entry.get("license")
        source = Path(parent.ref).expanduser()
        return read_front_matter_license(source if source.is_dir() else parent.folder)

    record = {
        "name": name,
        "genome": genome.to_dict(),
        "layers": layers.to_dict() if layers else None,
        "parents": {
            "father": parent_record(father),
            "mother": parent_record(mother),
            "base": parent_record(base) if base else None,
        },
        "generation": max(father.generation, mother.generation) + 1,
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "plan": plan.to_dict(),
        "mri": mri.summary(settings.mri.family_weights or None) if mri else None,
        "health": health.to_dict() if health else None,
        "eval": evaluation,
        "software": software_versions(),
    }
    if match_report is not None and not isinstance(match_report, CompatibilityReport):
        record["mapping"] = match_report.to_dict()  # how the Architecture Mapper paired the parents
    record["command"] = command or reproduce_command(record)

    from .hub import render_model_card

    license_name = choose_license({p.ref: parent_license(p) for p in (father, mother)})
    (folder / "README.md").write_text(render_model_card(card_metadata(record, license_name), card_body(record)), encoding="utf-8")

    record["files"] = dict(sorted(digests.items()))
    temporary = folder / f"{RECORD_NAME}.partial"
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    with open(temporary) as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, folder / RECORD_NAME)
    return record


def verify_child(folder: str | Path) -> list[str]:
    """Check a child folder against its `darwin.json` checksums; return the problems found."""
    folder = Path(folder)
    record_path = folder / RECORD_NAME
    if not record_path.is_file():
        return [f"{folder}: no {RECORD_NAME}, so this is not a complete Darwin child"]
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError:
        return [f"{record_path}: invalid JSON"]
    problems = []
    for name, expected in record.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is listed in {RECORD_NAME} but missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} does not match its checksum in {RECORD_NAME}; the file changed or is damaged")
    return problems


# --- in-memory breeding (evolution) ---------------------------------------------------------


def load_tensors(parent: Parent) -> dict[str, torch.Tensor]:
    """Read every tensor of a parent into memory once (the evolution loop reuses them)."""
    return {name: parent.checkpoint.get(name) for name in sorted(parent.checkpoint.tensors)}


def breed_tensors(
    plan: MergePlan,
    father: dict[str, torch.Tensor],
    mother: dict[str, torch.Tensor],
    base: dict[str, torch.Tensor] | None,
    seed: int,
    plan_settings: PlanSettings = PlanSettings(),
) -> dict[str, torch.Tensor]:
    """Apply a plan to tensors held in memory; gives the same tensors as the streaming breed."""
    return {
        name: merge_tensor(plan.entries[name], father[name], mother[name], base[name] if base else None, plan.method, seed, plan_settings)
        for name in sorted(father)
    }
