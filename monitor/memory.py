"""Give the C allocator's free memory back to the operating system.

The service's native allocations - the embedder's activations, the vector store's segments,
lxml's trees - come and go in batches of many sizes. glibc keeps freed memory in its arenas
for reuse, and with such a mix it rarely gives it back on its own: the soak benchmark saw the
service's RSS grow by 10-18 MiB a minute on some machines, of which ``malloc_trim(0)`` at the
end returned 100-220 MiB (README, *Soak*). Python's own objects were not growing. So the
service calls ``malloc_trim`` once a minute (``monitor.service``) and each extraction worker
after a page, at most every 10 s (``monitor.pages``); elsewhere (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    # ctypes releases the GIL during the call: other threads go on while the arenas are walked
    return trim


def release_free_memory() -> bool:
    """Return the allocator's free memory to the system; True when some was returned, False
    when none was or the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))


def trim_available() -> bool:
    """Whether this process's C library can return free memory (glibc)."""
    return _malloc_trim() is not None
