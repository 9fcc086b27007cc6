import resource
import subprocess
import sys

import pytest

from hsa_graph.allocator import _glibc

SCRIPT = r'''
import resource, sys, torch
import hsa_graph
applied = hsa_graph.keep_freed_memory() if sys.argv[1] == "keep" else None

def faults_of_big_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(64 * 2**20 // 4)     # 64 MiB: above glibc's mmap cap
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

for _ in range(4):          # the heap grows to the working set first
    faults_of_big_tensor()
print(applied, sum(faults_of_big_tensor() for _ in range(3)))
'''


def _faults(mode):
    out = subprocess.run([sys.executable, '-c', SCRIPT, mode], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(_glibc() is None, reason='needs Linux with glibc')
def test_keep_freed_memory_stops_refaulting_large_tensors():
    # 64 MiB is 16,384 pages of 4 KiB: by default every new tensor faults
    # them in again; with freed memory kept, the second one reuses the first.
    applied, kept = _faults('keep')
    assert applied == 'True'
    _, default = _faults('default')
    assert default > 3 * 16384 * 0.9, default
    assert kept < default / 10, (kept, default)


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    from hsa_graph import allocator
    monkeypatch.setattr(allocator.sys, 'platform', 'darwin')
    assert allocator.keep_freed_memory() is False
