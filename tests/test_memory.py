"""The allocator trim the service runs now and then (monitor.memory)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from monitor.memory import release_free_memory, trim_available


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not trim_available(), reason="needs glibc's malloc_trim (Linux with glibc)")
def test_freed_small_blocks_are_returned_to_the_system() -> None:
    # 200k blocks of 200 bytes come from the heap, not from mmap; all but the last are freed,
    # and the last one pins the heap's top, so free() alone cannot shrink it: only the trim
    # returns the freed pages in the middle
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(200) for _ in range(200_000)]
    for block in blocks:
        ctypes.memset(block, 1, 200)  # touch the pages, so they count in RSS
    for block in blocks[:-1]:
        libc.free(block)
    freed = _rss_kib()
    try:
        released = release_free_memory()
        trimmed = _rss_kib()
    finally:
        libc.free(blocks[-1])
    assert released
    assert trimmed < freed - 10_000  # of ~45 MiB freed, most goes back to the system


def test_without_glibc_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor import memory

    memory._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert not trim_available()
        assert release_free_memory() is False
    finally:
        memory._malloc_trim.cache_clear()
