"""SHA-256 of files, remembered across runs so large parents are hashed once."""

import hashlib
import json
import logging
import os
from pathlib import Path

from .paths import cache_dir

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """Return the file's SHA-256, reusing an earlier result while its size and mtime are unchanged.

    The memo lives in `<cache>/hashes.json`, keyed by absolute path; a file rewritten in place
    with the same size within the same nanosecond would be missed, which real checkpoints are not.
    """
    path = Path(path).resolve()
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    memo_path = cache_dir() / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        memo = {}
    entry = memo.get(str(path))
    if entry and entry.get("stamp") == stamp:
        return entry["sha256"]

    digest = sha256_file(path)
    memo[str(path)] = {"stamp": stamp, "sha256": digest}
    temporary = memo_path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(memo))
    os.replace(temporary, memo_path)  # atomic, so concurrent runs never read a half-written memo
    return digest
