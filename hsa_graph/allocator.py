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

Independently of that setting, hsa_graph asks the kernel for transparent
huge pages (2 MiB) for its own large level buffers (:func:`new_buffer`):
one page fault per 2 MiB instead of per 4 KiB, about a third of the time of
a step at 16,384 leaves, with no process-wide change (``madvise`` covers
only those buffers; PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` does the same for
every allocation). :func:`advise_huge_pages` turns it off.

docs/performance.md has the measurements.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional, Sequence

import torch

__all__ = ['keep_freed_memory', 'advise_huge_pages']

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
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


_LIBC = _glibc()
_MADV_HUGEPAGE = 14          # <sys/mman.h>
_HUGE_PAGE = 2 << 20
# Below glibc's largest mmap threshold (32 MiB) a freed block goes back to
# the heap and is reused without new faults; from it on every new block is
# mapped afresh, which is where huge pages pay (and only fresh mappings are
# advised, never the heap).
_MIN_BYTES = 32 << 20
_HUGE_PAGES = {'on': True}


def advise_huge_pages(enabled: bool = True) -> bool:
    r"""Whether hsa_graph advises transparent huge pages for its large CPU
    level buffers (on by default, Linux only; see the module's notes).
    Huge pages are served where the kernel's
    ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` or
    ``always``; with ``never`` the advice is ignored.

    Args:
        enabled (bool): advise them (:obj:`True`) or not.

    Returns:
        bool: the previous setting.
    """
    previous = _HUGE_PAGES['on']
    _HUGE_PAGES['on'] = bool(enabled)
    return previous


def new_buffer(like: torch.Tensor, shape: Sequence[int],
               dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    r"""``like.new_empty(shape, dtype=dtype)``; on Linux CPU, a buffer of
    at least 32 MiB is advised to use transparent huge pages before its
    first write (its pages are untouched: a fresh ``mmap``)."""
    if torch.compiler.is_compiling():
        return like.new_empty(shape, dtype=dtype)
    out = like.new_empty(shape, dtype=dtype)
    if out.device.type != 'cpu' or not _HUGE_PAGES['on'] or _LIBC is None:
        return out
    nbytes = out.numel() * out.element_size()
    if nbytes >= _MIN_BYTES:
        start = out.data_ptr()
        first = -(-start // _HUGE_PAGE) * _HUGE_PAGE     # whole huge pages
        last = (start + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if last > first:
            _LIBC.madvise(first, last - first, _MADV_HUGEPAGE)
    return out


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
    from 4,096 on; a batch of 8 ragged trees of 4,096 leaves ran 1.6-1.7x
    faster (its many per-bucket blocks of 2-32 MiB are otherwise trimmed
    from the heap and faulted in again every step). Recommended for CPU
    training. The cost: the process's
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
