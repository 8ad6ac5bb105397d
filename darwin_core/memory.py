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
