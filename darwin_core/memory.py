"""Process memory settings for streaming breeds."""

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_MMAP_THRESHOLD_BYTES = 1024 * 1024
_applied = False


def return_large_blocks_to_the_os() -> None:
    """Make glibc serve every allocation above 1 MiB with its own memory map.

    glibc raises its mmap threshold after large blocks are freed (up to 32 MiB by default), so
    tensor-sized buffers then come from the heap and freed ones stay in the process. A streaming
    breed allocates and frees one buffer per tensor, and with the raised threshold its resident
    memory grew to about eight tensors instead of three (measured by bench/inprocess.py on
    64 MiB tensors). Fixing the threshold returns each freed buffer at once. It is a
    process-wide setting, applied once; other C libraries are untouched.
    """
    global _applied
    if _applied or not sys.platform.startswith("linux"):
        return
    _applied = True
    library = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(library or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("mallopt is not available; keeping the default malloc thresholds")
        return
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) != 1:
        logger.debug("mallopt(M_MMAP_THRESHOLD) was refused; keeping the default")


def available_memory() -> int | None:
    """Memory the system can give a new allocation now, in bytes (MemAvailable on Linux), or None."""
    import os

    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# Rough constants for peak-memory estimates, not measurements of every model: the Python process
# with torch and transformers loaded, and the float32 working copies of the largest tensor
# that one merge step holds at once.
RUNTIME_OVERHEAD_BYTES = 512 * 1024 * 1024
WORKING_COPIES = 10


def estimate_peak_bytes(mode: str, parent_bytes: list[int], largest_tensor_elements: int, child_bytes: int) -> int:
    """Estimated peak memory of a breed: `streaming` holds a few working copies of the largest
    tensor; `memory` (evolution, the studio's chat) also holds every parent and one child."""
    needed = RUNTIME_OVERHEAD_BYTES + WORKING_COPIES * 4 * largest_tensor_elements
    if mode == "memory":
        needed += sum(parent_bytes) + child_bytes
    return needed


def require_memory(needed_bytes: int, what: str, available: int | None = None) -> None:
    """Raise a `DarwinError` with both numbers when `needed_bytes` exceeds the available memory."""
    from .errors import DarwinError
    from .outputs import format_bytes

    available = available_memory() if available is None else available
    if available is not None and needed_bytes > available:
        raise DarwinError(
            f"{what} needs about {format_bytes(needed_bytes)} of memory but only {format_bytes(available)} is available. "
            "Use a streaming breed (darwin breed), smaller parents, or a machine with more memory."
        )
