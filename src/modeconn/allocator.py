"""Keep freed memory in the process (glibc): large CPU tensors stop costing page faults.

PyTorch's CPU allocator has no cache: every tensor is a ``malloc`` and every free a ``free``.
glibc serves blocks above its mmap threshold (at most 32 MB by default) with a fresh ``mmap``
and unmaps them when freed, and trims the heap's top when it is freed. An evaluation batch of 512
Fashion-MNIST images makes a 51 MB activation in a lenet's first layer, so every batch mapped
new pages and faulted each of them in: evaluating 10,000 test images took 5.0–5.8 s with 1.3–1.9
million page faults, and 3.0–4.4 s with 0.1 million once freed memory is kept (five passes in
one process each, two threads, this machine beside another job, 2026-12-07). One epoch of a
lenet on 12,000 images with its evaluation, one thread, idle: 20.5 and 20.8 s (0.7–0.9 million
faults) against 14.9 and 17.3 s (0.12 million). The demo spent 80 s of its 21 CPU minutes in
the kernel before, 10 s after; its three models trained side by side in 247 s without and
237 s with (back to back, 2026-12-08).

:func:`keep_freed_memory` raises both thresholds so freed blocks stay in the process and are
reused: the resident size stays at its peak instead of shrinking between batches. It is set
once at each process's edge (the command line, the demo's training workers); a Python user
calls it at the top of a script. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to 1 GiB come from the heap and freed ones are never given back to the system.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to keep freed memory for reuse; True when it took the settings,
    False where there is no glibc (macOS, Windows, musl) or it refused them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trimmed = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mapped and trimmed


__all__ = ["keep_freed_memory"]
