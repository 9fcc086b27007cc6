r"""CPU allocator tuning: let glibc keep freed memory for reuse.

PyTorch's CPU tensors come straight from ``malloc``. glibc serves every block
above 32 MB (and, at first, above 128 KB) with a fresh ``mmap`` and hands it
back to the kernel on ``free``, so each new large tensor is page-faulted and
zeroed again, page by page. HSA's level passes write a few dozen such tensors
per step once a level holds more than 32 MB (16,384 leaves x 8 heads x 64
channels in float32): at that size the faults cost more time than the
arithmetic. :func:`keep_freed_memory` makes glibc serve large blocks from its
heap and keep them after ``free``, the effect that PyTorch's CPU tuning guide
gets by preloading jemalloc or tcmalloc.

The same setting, without code, for a whole process::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 python train.py

docs/performance.md has the measurements.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ['keep_freed_memory']

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def _glibc():
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        libc.gnu_get_libc_version     # only glibc has it
        libc.mallopt
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    r"""Makes glibc's ``malloc`` serve large blocks from its heap and keep
    freed memory (up to 2 GiB at the top of the heap) for reuse, for the rest
    of the process. Call it once, early; it affects allocations made after
    it.

    On this project's 2-core benchmark machine it made the HSA forward and
    backward pass at 16,384 leaves (8 heads x 64, float32) 2.2-3.3x faster
    (186,355 -> 10,706 page faults per step in the final run of
    ``benchmarks/attention.py --allocator default|keep``, see
    docs/performance.md), and time grows linearly in the number of leaves
    from 4,096 on. The cost: the process's
    resident memory no longer shrinks after a peak, and freed blocks may
    fragment the heap.

    Returns:
        bool: :obj:`True` if the setting was applied (Linux with glibc),
        :obj:`False` otherwise (other C libraries, macOS, Windows), where it
        does nothing; preload jemalloc or tcmalloc there instead.
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1 and ok
    return ok
