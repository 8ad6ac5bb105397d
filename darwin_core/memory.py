"""Process memory settings for streaming breeds."""

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers in glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
_applied = False


def return_large_blocks_to_the_os() -> None:
    """Serve allocations above 8 MiB with their own memory maps, and keep up to 64 MiB of freed heap.

    glibc raises its mmap threshold after large blocks are freed (up to 32 MiB by default), so
    tensor-sized buffers then come from the heap and freed ones stay in the process: a streaming
    breed of 64 MiB tensors held about eight tensors instead of three (bench/inprocess.py).
    Fixed thresholds stop that: a block above 8 MiB is unmapped as soon as it is freed. Smaller
    blocks (the projections of a 135M model, 3.5 MB in float32) are reused from the heap, which
    is only trimmed once 64 MiB at its top are free; a 1 MiB threshold with the default trim
    made every temporary a fresh map whose pages fault in again, and a TIES breed of SmolLM2
    took 2.1 s instead of 1.1 s at the same peak RSS. The setting is process-wide and applied
    once, and other C libraries are untouched.
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
    for parameter, value in ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)):
        if mallopt(parameter, value) != 1:
            logger.debug("mallopt(%d, %d) failed, so glibc keeps its default for that parameter", parameter, value)


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
