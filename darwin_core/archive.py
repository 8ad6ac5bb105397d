"""Extraction of uploaded model archives that cannot write outside their folder."""

import shutil
import stat
import zipfile
from pathlib import Path

from .errors import DarwinError

MAX_ARCHIVE_FILES = 10_000
MAX_EXTRACTED_BYTES = 20 * 1024**3


def safe_extract_zip(archive: str | Path, destination: str | Path, max_bytes: int = MAX_EXTRACTED_BYTES) -> Path:
    """Extract a zip into `destination`, rejecting entries that would land outside it.

    Rejected before anything is written: absolute paths, `..` components, symbolic links,
    more than `MAX_ARCHIVE_FILES` entries, or a declared uncompressed size above `max_bytes`.
    Extraction also stops if the written bytes exceed `max_bytes` (the declared sizes can lie).
    Returns the folder holding the model: the destination, or its single top-level folder.
    """
    destination = Path(destination).resolve()
    destination.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        if len(members) > MAX_ARCHIVE_FILES:
            raise DarwinError(f"{Path(archive).name}: {len(members)} entries, more than the {MAX_ARCHIVE_FILES} allowed")
        declared = sum(member.file_size for member in members)
        if declared > max_bytes:
            raise DarwinError(f"{Path(archive).name}: unpacks to {declared} bytes, more than the {max_bytes} allowed")
        for member in members:
            name = member.filename
            target = (destination / name).resolve()
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or not target.is_relative_to(destination):
                raise DarwinError(f"{Path(archive).name}: entry {name!r} points outside the upload folder; the archive was rejected")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise DarwinError(f"{Path(archive).name}: entry {name!r} is a symbolic link; the archive was rejected")

        written = 0
        for member in members:
            target = (destination / member.filename).resolve()
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as source, open(target, "wb") as sink:
                while chunk := source.read(1024 * 1024):
                    written += len(chunk)
                    if written > max_bytes:
                        sink.close()
                        shutil.rmtree(destination, ignore_errors=True)
                        raise DarwinError(f"{Path(archive).name}: unpacked more than {max_bytes} bytes; the archive was rejected")
                    sink.write(chunk)

    entries = [path for path in destination.iterdir() if not path.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return destination
