"""Everything that talks to the Hugging Face Hub, and the only module that imports huggingface_hub.

Functions for the CLI and the studio (all take `token=None`, which means the HF_TOKEN environment
variable, and `endpoint=None`, which means huggingface_hub's setting, HF_ENDPOINT):

- `search_models(text, model_type=, base_model=, sort=, limit=, page=)` -> list of `HubModel`;
  `HubModel.to_row()` gives one table row under `MODEL_TABLE_HEADERS`.
- `find_siblings(repo_id)` -> `Siblings`: fine-tunes of the father's declared base (natural
  mothers) and of the father itself, plus that base to offer as the DARE base.
- `cached_models(text, model_type=)` -> models in the local Hub cache, without any network request.
- `token_status(token, repo_id=)` -> `TokenStatus`: the account and whether it can write there.
- `preflight(father, mother, base, mode=)` -> `PreflightReport` built from config.json and the
  safetensors headers only; it raises for a parent that cannot be used at all, and
  `PreflightReport.require_ok()` raises for an incompatible pair or a machine too small.
- `fetch_parent(repo_id, revision, token, progress=)` -> (snapshot folder, commit hash).
- `push_child(folder, repo_id, private=, token=)` -> URL of the repository.

Every Hub failure is re-raised as a `DarwinError` subclass whose message names the repository and
states the next step. Tokens are passed to huggingface_hub as arguments only: they are never logged,
written, put in a message or in a URL, and no result object stores them.
"""

import contextlib
import dataclasses
import fnmatch
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .compat import CompatibilityReport, ParentSummary, compare_shapes, require_compatible, summarize
from .errors import DarwinError, HubError, IncompatibleParentsError, ParentError
from .memory import available_memory, estimate_peak_bytes
from .outputs import format_bytes

logger = logging.getLogger(__name__)

# Files a parent needs: weights in safetensors form, the index, configs, tokenizer, chat
# template and PEFT adapter files. Pickled weights are never downloaded.
PARENT_PATTERNS = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",
    "README.md",
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Safetensors dtypes that only quantized checkpoints use for weight matrices.
QUANTIZED_DTYPES = {"I8", "U8", "I4", "U4", "F8_E4M3", "F8_E5M2", "F4"}
SORT_KEYS = ("downloads", "likes")
SEARCH_FIELDS = ["config", "safetensors", "cardData", "downloads", "likes", "gated", "tags", "library_name", "private"]
MODEL_TABLE_HEADERS = ["model", "architecture", "parameters", "downloads", "license", "gated"]
TOKEN_SETTINGS_URL = "https://huggingface.co/settings/tokens"

MERGE_MODES = ("streaming", "memory")

ProgressCallback = Callable[[str, float, float | None], None]


# --- tokens and errors -----------------------------------------------------------------------


def resolve_token(token: str | None = None) -> str | None:
    """Return the token to send: the given one, else HF_TOKEN, else None (anonymous)."""
    token = (token or "").strip() or os.environ.get("HF_TOKEN", "").strip()
    return token or None


def _auth(token: str | None) -> str | bool:
    # False stops huggingface_hub from falling back to a token saved by `hf auth login`, so the
    # token used is always the one the user gave here or in HF_TOKEN.
    return token if token else False


def _api(endpoint: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint)


def is_offline() -> bool:
    """Return whether huggingface_hub is in offline mode (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _is_network_error(error: BaseException) -> bool:
    # huggingface_hub 2.x sends requests with httpx2 and 1.x with httpx; both raise a subclass of
    # their TransportError for refused connections, timeouts and broken responses.
    return any(
        cls.__name__ == "TransportError" and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(error).__mro__
    )


def _retry_after(error) -> str:
    seconds = getattr(getattr(error, "response", None), "headers", {}).get("Retry-After")
    return f"{seconds} seconds" if seconds and str(seconds).isdigit() else "a minute"


@contextlib.contextmanager
def translate_errors(repo_id: str, action: str, *, token_given: bool = False, write: bool = False):
    """Re-raise huggingface_hub errors as `HubError` naming the repository and the next step.

    `action` completes "cannot ACTION REPO" ("download", "push to"). `token_given` and `write`
    choose between the messages for a missing token, a token without access and a read-only token.
    """
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError:
        # GatedRepoError subclasses RepositoryNotFoundError, so it must be caught first.
        raise HubError(
            f"{repo_id} is gated: open its page on the Hub, accept its conditions with your account, then use a "
            "token of that account (HF_TOKEN, or the studio's token field)"
        ) from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo_id}: revision not found; check the branch, tag or commit after '@'") from None
    except errors.RepositoryNotFoundError:
        if token_given:
            raise HubError(
                f"{repo_id} not found on the Hub, or the token's account cannot see it: check the id, and that the "
                "token has read access to this repository"
            ) from None
        raise HubError(
            f"{repo_id} not found on the Hub, or it is private and no token was given: check the id, or set HF_TOKEN "
            "(or the studio's token field) to a token with read access"
        ) from None
    except errors.OfflineModeIsEnabled:
        raise HubError(_offline_message(repo_id, action)) from None
    except errors.LocalEntryNotFoundError:
        if is_offline():
            raise HubError(_offline_message(repo_id, action)) from None
        raise HubError(
            f"cannot {action} {repo_id}: the Hub cannot be reached and the files are not in the local cache; "
            "check the network connection, or use a local folder"
        ) from None
    except errors.HFValidationError as error:
        raise HubError(f"{repo_id!r} is not a valid Hub repository id ({error}); use the form org/name") from None
    except errors.HfHubHTTPError as error:
        raise HubError(_http_message(error, repo_id, action, write)) from None
    except Exception as error:
        if _is_network_error(error):
            raise HubError(
                f"cannot {action} {repo_id}: the Hub cannot be reached ({type(error).__name__}); check the network "
                "connection, or set HF_HUB_OFFLINE=1 to work with cached models only"
            ) from None
        raise


def _offline_message(repo_id: str, action: str) -> str:
    return (
        f"cannot {action} {repo_id}: offline mode is on (HF_HUB_OFFLINE=1) and the files are not in the local "
        "cache; unset HF_HUB_OFFLINE to reach the Hub, or pick a model from the cached list"
    )


def _http_message(error, repo_id: str, action: str, write: bool) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        return (
            f"cannot {action} {repo_id}: the Hub rejected the token (HTTP 401); check HF_TOKEN or the studio's token field, "
            f"or create a new token at {TOKEN_SETTINGS_URL}"
        )
    if status == 403 and write:
        namespace = repo_id.split("/")[0]
        return (
            f"cannot {action} {repo_id}: the token has no write access to {namespace} (HTTP 403); use a token with "
            f"the write role, or a fine-grained token that may write to {namespace} ({TOKEN_SETTINGS_URL})"
        )
    if status == 403:
        return f"cannot {action} {repo_id}: the token's account has no access to it (HTTP 403); ask its owner for access"
    if status == 429:
        return f"cannot {action} {repo_id}: the Hub rate-limited this client (HTTP 429); wait {_retry_after(error)} and try again"
    if status is not None and status >= 500:
        return f"cannot {action} {repo_id}: the Hub had a server error (HTTP {status}); try again in a few minutes"
    detail = getattr(error, "server_message", None) or "no detail given"
    return f"cannot {action} {repo_id}: the Hub answered HTTP {status or 'error'} ({detail})"


# --- result types ----------------------------------------------------------------------------


def format_count(count: int | None) -> str:
    """Format a parameter or download count in the Hub's style: 135M, 7.24B."""
    if count is None:
        return "-"
    for divisor, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= divisor:
            value = count / divisor
            return f"{value:.0f}{suffix}" if value >= 100 else f"{value:.3g}{suffix}"
    return str(count)


@dataclass(frozen=True)
class HubModel:
    """One model repository as the search, the siblings list and the cache listing show it."""

    repo_id: str
    architecture: str | None = None
    model_type: str | None = None
    parameter_count: int | None = None
    downloads: int | None = None
    likes: int | None = None
    license: str | None = None
    gated: bool = False
    private: bool = False
    base_models: tuple[str, ...] = ()
    # Set for models found in the local cache: the cached commit and its size on disk.
    revision: str | None = None
    size_bytes: int | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["base_models"] = list(self.base_models)
        return data

    def to_row(self) -> list:
        """Return one row for a table with `MODEL_TABLE_HEADERS`."""
        return [
            self.repo_id,
            self.architecture or "-",
            format_count(self.parameter_count),
            self.downloads if self.downloads is not None else "-",
            self.license or "-",
            "yes" if self.gated else "no",
        ]

    @classmethod
    def from_info(cls, info) -> "HubModel":
        """Build from a huggingface_hub `ModelInfo` (search results or `model_info`)."""
        config = info.config or {}
        card = info.card_data
        license_name = getattr(card, "license", None) if card is not None else None
        if license_name is None:
            license_name = next((tag.removeprefix("license:") for tag in info.tags or [] if tag.startswith("license:")), None)
        return cls(
            repo_id=info.id,
            architecture=(config.get("architectures") or [None])[0],
            model_type=config.get("model_type"),
            parameter_count=info.safetensors.total if info.safetensors else None,
            downloads=info.downloads,
            likes=info.likes,
            license=license_name if isinstance(license_name, str) else None,
            gated=bool(info.gated),
            private=bool(info.private),
            base_models=_declared_bases(card),
        )


def _declared_bases(card) -> tuple[str, ...]:
    value = getattr(card, "base_model", None) if card is not None else None
    if isinstance(value, str):
        return (value,)
    return tuple(item for item in value or () if isinstance(item, str))


@dataclass(frozen=True)
class Siblings:
    """Candidate mothers for a father, and the father's declared base to use as the DARE base."""

    father: str
    base: str | None
    models: tuple[HubModel, ...]

    def to_dict(self) -> dict:
        return {"father": self.father, "base": self.base, "models": [model.to_dict() for model in self.models]}


@dataclass(frozen=True)
class TokenStatus:
    """A token's account and write access; the token itself is not stored."""

    present: bool
    valid: bool
    user: str | None
    role: str | None  # "read", "write" or "fineGrained", as the Hub reports it
    can_write: bool | None  # None when no target repository was given for a fine-grained token
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParentCheck:
    """One parent as the pre-flight saw it, from config.json and its safetensors headers."""

    ref: str
    repo_id: str | None  # None for a local folder, a GGUF file or an embedded model
    revision: str | None  # the commit the check read; fetch this one to get the same files
    kind: str  # "hub", "hub-adapter" or "local"
    download_bytes: int  # bytes still to download (files already in the cache are not counted)
    license: str | None
    summary: ParentSummary
    largest_tensor_elements: int

    def to_dict(self) -> dict:
        data = asdict(self)
        data["summary"] = self.summary.to_dict()
        return data


@dataclass(frozen=True)
class PreflightReport:
    """Compatibility of two parents and whether this machine can breed them, before any download."""

    mode: str
    father: ParentCheck
    mother: ParentCheck
    base: ParentCheck | None
    compatibility: CompatibilityReport
    cross_family: bool
    download_bytes: int
    disk_free_bytes: int | None
    memory_needed_bytes: int
    memory_available_bytes: int | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def require_ok(self) -> None:
        """Raise `IncompatibleParentsError` for unpaired tensors (unless crossing families), else
        `DarwinError` for the first resource problem."""
        if not self.cross_family:
            require_compatible(self.compatibility)
        if self.problems:
            raise DarwinError(self.problems[0])

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "ok": self.ok,
            "problems": list(self.problems),
            "father": self.father.to_dict(),
            "mother": self.mother.to_dict(),
            "base": self.base.to_dict() if self.base else None,
            "compatibility": self.compatibility.to_dict(),
            "download_bytes": self.download_bytes,
            "disk_free_bytes": self.disk_free_bytes,
            "memory_needed_bytes": self.memory_needed_bytes,
            "memory_available_bytes": self.memory_available_bytes,
        }


# --- find ------------------------------------------------------------------------------------


def search_models(
    text: str = "",
    *,
    model_type: str | None = None,
    base_model: str | None = None,
    library: str | None = "transformers",
    safetensors_only: bool = True,
    sort: str = "downloads",
    limit: int = 20,
    page: int = 0,
    token: str | None = None,
    endpoint: str | None = None,
) -> list[HubModel]:
    """Search Hub models whose id contains `text`, most downloaded (or liked) first.

    `model_type` keeps models tagged with that config `model_type` (the Hub tags every transformers
    model with it), `base_model` keeps models whose card declares that base. `page` counts from 0,
    each page holding `limit` models.
    """
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    if limit < 1 or page < 0:
        raise ValueError(f"limit must be at least 1 and page at least 0, got limit={limit}, page={page}")
    tags = [tag for tag in (library, "safetensors" if safetensors_only else None, model_type) if tag]
    if base_model:
        tags.append(f"base_model:{base_model}")
    token = resolve_token(token)

    with translate_errors("the model search", "run", token_given=token is not None):
        # The Hub returns the first (page + 1) * limit models; earlier pages are skipped here.
        found = _api(endpoint).list_models(
            search=text.strip() or None,
            filter=tags or None,
            sort=sort,
            limit=(page + 1) * limit,
            expand=SEARCH_FIELDS,
            token=_auth(token),
        )
        models = [HubModel.from_info(info) for info in found]
    return models[page * limit :]


def find_siblings(repo_id: str, *, limit: int = 50, token: str | None = None, endpoint: str | None = None) -> Siblings:
    """Find fine-tunes of the father's declared base and of the father, the natural mothers.

    A father whose card declares one `base_model` gets that base offered as the DARE base. A
    father that declares several (a merge) or none gets no base, and only its own fine-tunes.
    """
    token = resolve_token(token)
    api = _api(endpoint)
    with translate_errors(repo_id, "read", token_given=token is not None):
        info = api.model_info(repo_id, expand=["cardData", "config"], token=_auth(token))
    bases = _declared_bases(info.card_data)
    base = bases[0] if len(bases) == 1 else None

    found: dict[str, HubModel] = {}
    for ancestor in (base, repo_id):
        if ancestor is None:
            continue
        # `base_model:finetune:X` marks fine-tunes only; quantized and adapter repos carry other tags.
        with translate_errors(ancestor, "list the fine-tunes of", token_given=token is not None):
            for model_info in api.list_models(
                filter=[f"base_model:finetune:{ancestor}"], sort="downloads", limit=limit, expand=SEARCH_FIELDS, token=_auth(token)
            ):
                if model_info.id != repo_id:
                    found.setdefault(model_info.id, HubModel.from_info(model_info))
    models = sorted(found.values(), key=lambda model: -(model.downloads or 0))
    return Siblings(father=repo_id, base=base, models=tuple(models[:limit]))


def cached_models(text: str = "", *, model_type: str | None = None, cache_dir: str | Path | None = None) -> list[HubModel]:
    """List the models in the local Hub cache whose id contains `text`; never uses the network."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from .card import read_front_matter_license

    try:
        cache = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    for warning in cache.warnings:
        logger.debug("skipping a damaged cache entry: %s", warning)

    models = []
    for repo in sorted(cache.repos, key=lambda repo: repo.repo_id.lower()):
        if repo.repo_type != "model" or text.strip().lower() not in repo.repo_id.lower() or not repo.revisions:
            continue
        complete = [revision for revision in repo.revisions if _has_weights(Path(revision.snapshot_path))]
        if not complete:
            continue  # only config files were cached, by a pre-flight check for example
        revision = max(complete, key=lambda revision: revision.last_modified)
        snapshot = Path(revision.snapshot_path)
        config = _read_json(snapshot / "config.json")
        if model_type and config.get("model_type") != model_type:
            continue
        models.append(
            HubModel(
                repo_id=repo.repo_id,
                architecture=(config.get("architectures") or [None])[0],
                model_type=config.get("model_type"),
                parameter_count=_local_parameter_count(snapshot),
                license=read_front_matter_license(snapshot),
                revision=revision.commit_hash,
                size_bytes=repo.size_on_disk,
            )
        )
    return models


def _has_weights(snapshot: Path) -> bool:
    """Return whether a cached snapshot contains a whole safetensors checkpoint or adapter, not just its configs."""
    if (snapshot / "model.safetensors").is_file() or (snapshot / "adapter_model.safetensors").is_file():
        return True
    index = _read_json(snapshot / "model.safetensors.index.json")
    shards = set((index.get("weight_map") or {}).values())
    return bool(shards) and all((snapshot / shard).is_file() for shard in shards)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _local_parameter_count(folder: Path) -> int | None:
    from .checkpoint import read_safetensors_header

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    try:
        return sum(info.numel for path in files for info in read_safetensors_header(path)[0].values())
    except ParentError as error:
        logger.debug("cannot count the parameters of %s: %s", folder, error)
        return None


def father_model_type(ref: str, *, token: str | None = None, endpoint: str | None = None) -> str | None:
    """Read the config `model_type` of a parent reference from its config.json alone."""
    from .parents import hub_reference, resolve_parent

    hub = hub_reference(ref)
    if hub is None or is_offline():
        # A local parent, or a Hub parent read from its cached snapshot in offline mode.
        return resolve_parent(ref).config.get("model_type")
    repo_id, revision = hub
    token = resolve_token(token)
    with translate_errors(repo_id, "read", token_given=token is not None):
        info = _api(endpoint).model_info(repo_id, revision=revision, expand=["config"], token=_auth(token))
    return (info.config or {}).get("model_type")


# --- token -----------------------------------------------------------------------------------


def token_status(token: str | None = None, *, repo_id: str | None = None, endpoint: str | None = None) -> TokenStatus:
    """Ask the Hub whose token this is and whether it can write to `repo_id` (or its namespace)."""
    from huggingface_hub.errors import HfHubHTTPError

    token = resolve_token(token)
    if token is None:
        return TokenStatus(False, False, None, None, False, "no token: set the HF_TOKEN environment variable, or enter one in the studio's token field")
    with translate_errors(repo_id or "your account", "check the token for", token_given=True):
        try:
            account = _api(endpoint).whoami(token=token)
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) != 401:
                raise
            return TokenStatus(True, False, None, None, False, f"the Hub rejected the token (HTTP 401); create a new one at {TOKEN_SETTINGS_URL}")

    user = account.get("name")
    access = (account.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    can_write = _can_write(account, role, access, repo_id)
    target = repo_id or f"the namespace of {user}"
    if can_write:
        message = f"token of {user} ({role}) can write to {target}"
    elif can_write is None:
        message = f"token of {user} is fine-grained; its write access is checked when you push"
    elif role == "read":
        message = f"token of {user} is read-only: create a token with the write role at {TOKEN_SETTINGS_URL}"
    else:
        message = f"token of {user} ({role}) cannot write to {target}; use a token with write access there"
    return TokenStatus(True, True, user, role, can_write, message)


def _can_write(account: dict, role: str | None, access: dict, repo_id: str | None) -> bool | None:
    user = account.get("name")
    namespace = repo_id.split("/")[0] if repo_id and "/" in repo_id else user
    if role == "read":
        return False
    if role == "write":
        if namespace == user:
            return True
        # A write token writes to an organization only where its user may write.
        org = next((org for org in account.get("orgs") or [] if org.get("name") == namespace), None)
        return org is not None and org.get("roleInOrg") in ("write", "contributor", "admin")
    if role == "fineGrained":
        scopes = (access.get("fineGrained") or {}).get("scoped") or []
        for scope in scopes:
            entity = scope.get("entity") or {}
            matches = entity.get("name") == namespace if entity.get("type") in ("user", "org") else entity.get("name") == repo_id
            if matches and "repo.write" in (scope.get("permissions") or []):
                return True
        return False if scopes else None
    return None


# --- check before download -------------------------------------------------------------------


def preflight(
    father: str,
    mother: str,
    base: str | None = None,
    *,
    mode: str = "streaming",
    out_dir: str | Path | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    memory_limit_bytes: int | None = None,
    disk_limit_bytes: int | None = None,
    cross_family: bool = False,
) -> PreflightReport:
    """Check two parents (and a base) from config.json and safetensors headers, without weights.

    With `cross_family`, tensors that do not pair by name and shape are not a problem: the
    Architecture Mapper pairs them after the download and stops the breed if too few match.

    Hub references are read through the Hub's file metadata and header range requests; local
    references through their files. Raises `HubError` or `ParentError` for a parent that cannot be
    used (not found, gated, pickle-only, unknown format, quantized, custom code). Otherwise it
    returns a report. Its `problems` list an incompatible pair, a download larger than the free
    disk, or a breed that needs more memory than is available, and `require_ok()` raises for them.

    `memory_limit_bytes` and `disk_limit_bytes` replace the machine's available memory and the
    cache disk's free space, for a Space that gives each session a share.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"mode must be one of {', '.join(MERGE_MODES)}, got {mode!r}")
    token = resolve_token(token)
    parents: dict[str, ParentCheck] = {}
    shapes: dict[str, dict] = {}
    for role, ref in (("father", father), ("mother", mother), ("base", base)):
        if ref:
            parents[role], shapes[role] = _check_parent(ref, token, endpoint, cache_dir)
            logger.info("pre-flight checked the %s %s (%s)", role, ref, parents[role].summary.architecture)

    base_check = parents.get("base")
    report = compare_shapes(
        parents["father"].summary,
        parents["mother"].summary,
        shapes["father"],
        shapes["mother"],
        base_check.summary if base_check else None,
        shapes.get("base"),
    )

    problems = []
    try:
        require_compatible(report)
    except IncompatibleParentsError as error:
        if not cross_family:
            problems.append(str(error))

    download = sum(check.download_bytes for check in parents.values())
    child_bytes = parents["father"].summary.total_bytes
    disk_free = disk_limit_bytes if disk_limit_bytes is not None else _free_disk(_hub_cache(cache_dir))
    if disk_free is not None and download > disk_free:
        problems.append(
            f"not enough disk space for the download: the parents need {format_bytes(download)} in the Hub cache "
            f"but only {format_bytes(disk_free)} is free; free some space or set HF_HOME to a larger disk"
        )
    if out_dir is not None:
        out_free = _free_disk(Path(out_dir))
        if out_free is not None and child_bytes > out_free:
            problems.append(
                f"not enough disk space for the child in {out_dir}: it needs about {format_bytes(child_bytes)} but "
                f"only {format_bytes(out_free)} is free; choose another folder"
            )

    needed = estimate_memory(mode, parents["father"], parents["mother"], base_check)
    available = memory_limit_bytes if memory_limit_bytes is not None else available_memory()
    if available is not None and needed > available:
        advice = (
            "use streaming mode, which holds a few tensors at a time"
            if mode == "memory"
            else "free memory or use a machine with more RAM"
        )
        problems.append(
            f"not enough memory for the {mode} breed: it needs about {format_bytes(needed)} but "
            f"{format_bytes(available)} is available; {advice}"
        )

    return PreflightReport(
        mode=mode,
        father=parents["father"],
        mother=parents["mother"],
        base=base_check,
        compatibility=report,
        cross_family=cross_family,
        download_bytes=download,
        disk_free_bytes=disk_free,
        memory_needed_bytes=needed,
        memory_available_bytes=available,
        problems=tuple(problems),
    )


def estimate_memory(mode: str, father: ParentCheck, mother: ParentCheck, base: ParentCheck | None = None) -> int:
    """Estimate the peak memory of a breed of these parents in bytes (see `memory.estimate_peak_bytes`)."""
    parents = [check for check in (father, mother, base) if check is not None]
    return estimate_peak_bytes(
        mode,
        [check.summary.total_bytes for check in parents],
        max(check.largest_tensor_elements for check in parents),
        father.summary.total_bytes,
    )


def _hub_cache(cache_dir: str | Path | None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE)


def _free_disk(path: Path) -> int | None:
    """Free bytes on the disk holding `path` or its nearest existing parent folder."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _check_parent(ref: str, token: str | None, endpoint: str | None, cache_dir) -> tuple[ParentCheck, dict]:
    """Check one parent reference; return the check and its {tensor name: shape} map."""
    from .compat import summarize_parent
    from .parents import hub_reference, resolve_parent

    hub = hub_reference(ref)
    if hub is not None and not is_offline():
        return _check_hub_parent(ref, hub[0], hub[1], token, endpoint, cache_dir)

    from .card import read_front_matter_license

    # A local reference, or a Hub one in offline mode, which resolves to its cached snapshot.
    parent = resolve_parent(ref)
    shapes = {name: info.shape for name, info in parent.checkpoint.tensors.items()}
    check = ParentCheck(
        ref=ref,
        repo_id=hub[0] if hub else None,
        revision=parent.revision,
        kind="local",
        download_bytes=0,
        license=read_front_matter_license(parent.folder),
        summary=summarize_parent(parent),
        largest_tensor_elements=max((math.prod(shape) for shape in shapes.values()), default=0),
    )
    return check, shapes


def _check_hub_parent(ref, repo_id, revision, token, endpoint, cache_dir) -> tuple[ParentCheck, dict]:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    from .parents import unsupported_config_reason

    api = _api(endpoint)
    auth = _auth(token)
    with translate_errors(repo_id, "check", token_given=token is not None):
        info = api.model_info(repo_id, revision=revision, files_metadata=True, token=auth)
        if info.gated:
            # Gated repositories show their metadata to everyone; files need accepted conditions.
            api.auth_check(repo_id, token=auth)
    commit = info.sha
    sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
    names = set(sizes)
    card = info.card_data
    license_name = getattr(card, "license", None) if card is not None else None
    license_name = license_name if isinstance(license_name, str) else None

    checkpoint_format = _checkpoint_format(names)
    if checkpoint_format == "adapter":
        return _check_hub_adapter(ref, repo_id, commit, sizes, license_name, token, endpoint, cache_dir)
    if checkpoint_format is None:
        _reject_format(repo_id, names)

    with translate_errors(repo_id, "check", token_given=token is not None):
        try:
            config_path = api.hf_hub_download(repo_id, "config.json", revision=commit, cache_dir=cache_dir, token=auth)
        except EntryNotFoundError:
            raise ParentError(f"{repo_id}: no config.json in the repository, so its architecture is unknown; pick a transformers checkpoint") from None
        config = json.loads(Path(config_path).read_text())
        reason = unsupported_config_reason(config, repo_id)
        if reason:
            raise ParentError(reason)
        metadata = api.get_safetensors_metadata(repo_id, revision=commit, token=auth)

    typed_shapes = {
        name: (tensor.dtype, tuple(tensor.shape))
        for file_metadata in metadata.files_metadata.values()
        for name, tensor in file_metadata.tensors.items()
    }
    quantized = sorted({dtype for dtype, shape in typed_shapes.values() if dtype in QUANTIZED_DTYPES and len(shape) >= 2})
    if quantized:
        raise ParentError(
            f"{repo_id}: weight matrices are stored as {', '.join(quantized)}, so this is a quantized checkpoint. "
            "Darwin Studio merges full-precision weights only: use the unquantized original."
        )

    pending = [
        name
        for name in names
        if any(fnmatch.fnmatch(name, pattern) for pattern in PARENT_PATTERNS)
        and not isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=commit), str)
    ]
    check = ParentCheck(
        ref=ref,
        repo_id=repo_id,
        revision=commit,
        kind="hub",
        download_bytes=sum(sizes[name] for name in pending),
        license=license_name,
        summary=summarize(ref, config, typed_shapes),
        largest_tensor_elements=max((math.prod(shape) for _, shape in typed_shapes.values()), default=0),
    )
    return check, {name: shape for name, (_, shape) in typed_shapes.items()}


def _checkpoint_format(names: set[str]) -> str | None:
    """Classify a repository by its file names: "safetensors", "adapter" (PEFT) or None (unusable)."""
    if "model.safetensors" in names or "model.safetensors.index.json" in names:
        return "safetensors"
    if "adapter_config.json" in names and any(name.startswith("adapter_model") and name.endswith(".safetensors") for name in names):
        return "adapter"
    return None


def _reject_format(repo_id: str, names: set[str]) -> None:
    """Raise `ParentError` for a repository without a safetensors checkpoint, naming what it has instead."""
    from .checkpoint import pickle_refusal

    ggufs = sorted(name for name in names if name.endswith(".gguf"))
    if ggufs:
        # NOTE: a Hub reference names a repository, not one of its files, so GGUF repositories
        # (usually one file per quantization) are used through a downloaded file path instead.
        raise ParentError(
            f"{repo_id} contains GGUF files only ({', '.join(ggufs[:3])}). Download the one you want with "
            f"`hf download {repo_id} FILE.gguf` and pass its path as the parent; it is dequantised on load."
        )
    pickled = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
    if pickled:
        raise ParentError(pickle_refusal(repo_id, pickled))
    listed = ", ".join(sorted(names)[:5]) or "no files"
    raise ParentError(
        f"{repo_id}: no model.safetensors or model.safetensors.index.json (it has {listed}), so the weight format "
        "is unknown. Darwin Studio reads safetensors checkpoints, PEFT adapters and GGUF files."
    )


def _check_hub_adapter(ref, repo_id, commit, sizes, license_name, token, endpoint, cache_dir) -> tuple[ParentCheck, dict]:
    """Check a PEFT adapter repository through the base it declares: merged, it has the base's shapes."""
    auth = _auth(token)
    with translate_errors(repo_id, "check", token_given=token is not None):
        path = _api(endpoint).hf_hub_download(repo_id, "adapter_config.json", revision=commit, cache_dir=cache_dir, token=auth)
    base_ref = _read_json(Path(path)).get("base_model_name_or_path")
    if not base_ref:
        raise ParentError(f"{repo_id} is a PEFT adapter without base_model_name_or_path, so it cannot be applied to anything")
    try:
        base_check, shapes = _check_parent(base_ref, token, endpoint, cache_dir)
    except DarwinError as error:
        raise ParentError(f"{repo_id} is a PEFT adapter whose base {base_ref!r} cannot be used: {error}") from None
    adapter_bytes = sum(size for name, size in sizes.items() if name.startswith("adapter_") or name == "README.md")
    check = ParentCheck(
        ref=ref,
        repo_id=repo_id,
        revision=commit,
        kind="hub-adapter",
        download_bytes=base_check.download_bytes + adapter_bytes,
        license=license_name or base_check.license,
        summary=dataclasses.replace(base_check.summary, ref=ref),
        largest_tensor_elements=base_check.largest_tensor_elements,
    )
    return check, shapes


# --- fetch -----------------------------------------------------------------------------------


def fetch_parent(
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    *,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Path, str]:
    """Download a parent's safetensors, configs and tokenizer; return the folder and the commit hash.

    A repository without a safetensors checkpoint or adapter is rejected before any download.
    Files already in the Hub cache are not downloaded again, and with HF_HUB_OFFLINE=1 the cached
    snapshot is returned without any request. `progress(description, done, total)` is called as
    bytes arrive (total None while unknown).
    """
    from huggingface_hub import snapshot_download

    token = resolve_token(token)
    options = {"tqdm_class": _callback_progress_bar(progress)} if progress else {}
    with translate_errors(repo_id, "download", token_given=token is not None):
        if not is_offline():
            info = _api(endpoint).model_info(repo_id, revision=revision, token=_auth(token))
            names = {sibling.rfilename for sibling in info.siblings or []}
            if _checkpoint_format(names) is None:
                _reject_format(repo_id, names)
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=PARENT_PATTERNS,
                token=_auth(token),
                endpoint=endpoint,
                cache_dir=cache_dir,
                **options,
            )
        )
    # The snapshot folder is named after the resolved commit, which pins the revision.
    logger.info("fetched %s at commit %s", repo_id, folder.name)
    return folder, folder.name


def _callback_progress_bar(callback: ProgressCallback):
    """Build a tqdm class that draws nothing and passes every update to `callback`."""
    from tqdm.auto import tqdm

    class CallbackProgressBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.description = kwargs.get("desc") or ""

        def update(self, n=1):
            # A disabled tqdm does not count, so the count is kept here.
            self.n += n or 0
            callback(self.description, self.n, self.total or None)

        def set_description(self, desc=None, refresh=True):
            self.description = desc or ""

        def set_description_str(self, desc=None, refresh=True):
            self.description = desc or ""

    return CallbackProgressBar


# --- push ------------------------------------------------------------------------------------


def push_child(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    keep_empty_repo: bool = False,
) -> str:
    """Upload a Darwin child folder to a Hub model repository in one commit; return the repository URL.

    The repository is created when it does not exist (private if asked). A name without a
    namespace goes to the token's account. If the upload fails, a repository created by this
    call is deleted again, unless `keep_empty_repo` is set.
    """
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    record = _read_child_record(folder)
    token = resolve_token(token)
    if token is None:
        raise HubError(f"pushing needs a token with write access: set the HF_TOKEN environment variable, or enter one in the studio's token field ({TOKEN_SETTINGS_URL})")

    # One whoami request: the Hub rate-limits that endpoint strictly.
    status = token_status(token, repo_id=repo_id if "/" in repo_id else None, endpoint=endpoint)
    if status.valid and "/" not in repo_id:
        repo_id = f"{status.user}/{repo_id}"
    if not status.valid or status.can_write is False:
        raise HubError(f"cannot push to {repo_id}: {status.message}")
    with translate_errors(repo_id, "push to", token_given=True, write=True):
        validate_repo_id(repo_id)

    operations = [
        CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    father, mother = (_parent_label(record["parents"][role]) for role in ("father", "mother"))
    message = f"Add Darwin child of {father} x {mother}"
    description = f"Generation {record.get('generation')}, seed {record.get('seed')}, bred by Darwin Studio."

    api = _api(endpoint)
    created = False
    with translate_errors(repo_id, "push to", token_given=True, write=True):
        try:
            url = str(api.create_repo(repo_id, private=private, token=token))
            created = True
            logger.info("created %s repository %s", "private" if private else "public", repo_id)
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) != 409:
                raise
            url = f"{api.endpoint}/{repo_id}"
            logger.info("repository %s exists; adding a commit to it", repo_id)
        try:
            commit = api.create_commit(repo_id, operations, commit_message=message, commit_description=description, token=token)
        except BaseException:
            if created and not keep_empty_repo:
                _delete_failed_repo(api, repo_id, token)
            raise
    logger.info("pushed %d files to %s (commit %s)", len(operations), repo_id, commit.oid)
    return url


def _parent_label(parent: dict) -> str:
    """Name a parent in the commit message: Hub and embedded references as given, local paths by folder name."""
    if parent.get("kind") == "hub" or parent["ref"].startswith("embedded:"):
        return parent["ref"]
    return Path(parent["ref"]).name or parent["ref"]


def _read_child_record(folder: Path) -> dict:
    """Read and verify a child folder's darwin.json before anything is sent."""
    from .breed import verify_child
    from .outputs import RECORD_NAME

    problems = verify_child(folder)
    if problems:
        raise DarwinError(f"{folder} was not pushed: {problems[0]}")
    if not (folder / "README.md").is_file():
        raise DarwinError(f"{folder} has no README.md model card; breed the child again, which writes one")
    return json.loads((folder / RECORD_NAME).read_text())


def _delete_failed_repo(api, repo_id: str, token: str) -> None:
    try:
        api.delete_repo(repo_id, token=token, missing_ok=True)
        logger.warning("upload to %s failed; deleted the repository this push had created", repo_id)
    except Exception as error:  # the upload error matters more; the leftover is reported here
        logger.error("upload to %s failed and the empty repository could not be deleted (%s); delete it on the Hub", repo_id, type(error).__name__)


# --- model card ------------------------------------------------------------------------------


def import_card_support() -> None:
    """Import what `render_model_card` needs. A breed calls this on a background thread while it
    merges, which hides the 0.13 s (measured with cProfile) that the card classes take to import."""
    from huggingface_hub import ModelCard, ModelCardData  # attribute access loads the lazy submodules

    del ModelCard, ModelCardData


def render_model_card(metadata: dict, body: str) -> str:
    """Render a model card (YAML front matter and Markdown body) with `huggingface_hub.ModelCard`."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**{key: value for key, value in metadata.items() if value is not None})
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
