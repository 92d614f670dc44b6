"""Freed memory kept in the process: glibc takes the settings, and large tensors then reuse the
heap instead of mapping fresh pages each time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modeconn.allocator import keep_freed_memory

#: Five evaluation batches of a lenet's first layer (a 51 MB output each, above glibc's default
#: mmap threshold of 32 MB at most) in a fresh process; prints the page faults they took.
BATCHES = """
import resource, sys, torch
from modeconn.allocator import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
torch.set_num_threads(1)
conv, x = torch.nn.Conv2d(1, 32, 3, padding=1), torch.rand(512, 1, 28, 28)
with torch.no_grad():
    conv(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        conv(x)
print(int(kept), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", BATCHES, mode], capture_output=True, text=True, check=True
    )
    kept, faults = done.stdout.split()
    return int(kept), int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_evaluation_batches_reuse_freed_memory_once_it_is_kept():
    batch_pages = 512 * 32 * 28 * 28 * 4 // 4096  # 12,544
    kept, faults = _faults("keep")
    assert kept == 1 and faults < 2 * batch_pages
    plain_kept, plain_faults = _faults("plain")
    assert plain_kept == 0 and plain_faults > 4 * batch_pages  # mapped afresh every batch


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
