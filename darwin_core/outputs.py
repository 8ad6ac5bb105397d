"""Child folders: checks before writing, the temporary folder, and the atomic move into place."""

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputError

logger = logging.getLogger(__name__)

RECORD_NAME = "darwin.json"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def check_output(out: Path, needed_bytes: int, overwrite: bool) -> None:
    """Reject an output folder that exists (unless it is replaceable), cannot be written, or lacks space."""
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"output {out} exists and is a file; choose another folder")
        contents = list(out.iterdir())
        if contents and not overwrite:
            raise OutputError(f"output folder {out} already exists and is not empty; choose another folder or pass --overwrite")
        if contents and not (out / RECORD_NAME).is_file():
            raise OutputError(
                f"output folder {out} holds files that Darwin Studio did not write (no {RECORD_NAME}); "
                "it will not replace them even with --overwrite. Choose another folder."
            )
    parent = out.parent if out.parent != Path("") else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write into {parent.resolve()}: permission denied; choose a folder you can write to")
    free = shutil.disk_usage(parent).free
    if needed_bytes > free:
        raise OutputError(
            f"not enough disk space in {parent.resolve()}: the child needs about {format_bytes(needed_bytes)} "
            f"but only {format_bytes(free)} is free"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete temporary folders beside `out` left by breeds whose process no longer runs (killed
    mid-write); folders of breeds still running are kept. Returns the folders removed."""
    removed = []
    for folder in out.parent.glob(f".{out.name}.partial-*"):
        pid_text = folder.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            logger.info("removed %s, left by an interrupted breed", folder)
    return removed


def temporary_folder(out: Path) -> Path:
    """A fresh hidden folder beside `out`, on the same file system, so the final move is a rename.

    Its name carries this process's id, so a later breed can tell a folder left by a killed
    process from one still being written.
    """
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp creates 0700; the child gets the user's usual permissions
    return folder


def move_into_place(temporary: Path, out: Path) -> None:
    """Rename the finished child folder to `out`, replacing an earlier Darwin child there."""
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
        os.rename(out, retired / out.name)
        os.rename(temporary, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(temporary, out)


def out_of_space_error(error: OSError, out: Path, needed_bytes: int) -> OutputError | None:
    """Translate ENOSPC or EFBIG into an `OutputError` with the sizes, or return None."""
    if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return None
    free = shutil.disk_usage(out.parent).free
    return OutputError(
        f"writing {out} failed: no space left ({error.strerror}). The child needs about {format_bytes(needed_bytes)} "
        f"and {format_bytes(free)} is free now; the partial child was removed. Free some space or choose another disk."
    )
