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


def _vm_flags(address):
    r"""The VmFlags of the mapping holding :obj:`address` (Linux)."""
    current = None
    with open('/proc/self/smaps') as smaps:
        for line in smaps:
            head = line.split()[0]
            if '-' in head and not head.endswith(':'):
                lo, hi = (int(x, 16) for x in head.split('-'))
                current = lo <= address < hi
            elif head == 'VmFlags:' and current:
                return line.split()[1:]
    return None


@pytest.mark.skipif(_glibc() is None, reason='needs Linux with glibc')
def test_new_buffer_advises_huge_pages_for_large_cpu_buffers():
    import torch
    from hsa_graph.allocator import advise_huge_pages, new_buffer
    like = torch.zeros(1, dtype=torch.float64)
    big = new_buffer(like, (8, 2**20))          # 64 MiB of float64
    assert big.shape == (8, 2**20) and big.dtype == torch.float64
    middle = big.data_ptr() + big.numel() * big.element_size() // 2
    assert 'hg' in _vm_flags(middle)
    small = new_buffer(like, (1000, ), torch.float32)
    assert small.dtype == torch.float32 and small.numel() == 1000
    previous = advise_huge_pages(False)
    try:
        assert previous is True
        plain = new_buffer(like, (8, 2**20))
        middle = plain.data_ptr() + plain.numel() * plain.element_size() // 2
        assert 'hg' not in _vm_flags(middle)
    finally:
        advise_huge_pages(previous)
