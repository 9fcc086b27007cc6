r"""Moves between levels in the two forms a head-major ``[H, S, C]`` level
allows, on random sorted parent indices: ``index_select`` / ``index_add``
along the slot dimension (what the DP does) against the same along dim 0
of a ``[H * S, C]`` view with per-head row indices. Median ms per call:

    python benchmarks/gather_forms.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_ms  # noqa: E402

torch.set_num_threads(2)


# (heads, child slots, parent slots, channels): an octree level of the
# point-cloud example read as 3H = 12 heads of 16 channels, and the 8 x 64
# ragged batch's two deepest level pairs read as 3H = 24 heads.
for heads, slots, parents, channels in [(12, 60000, 12000, 16),
                                        (24, 17417, 1101, 64),
                                        (24, 16384, 17417, 64)]:
    gen = torch.Generator().manual_seed(0)
    parent = torch.randint(0, parents, (slots, ), generator=gen).sort().values
    rows = (torch.arange(heads).unsqueeze(1) * parents + parent).flatten()
    child = torch.randn(heads, slots, channels, generator=gen)
    above = torch.randn(heads, parents, channels, generator=gen)
    flat = above.view(-1, channels)
    figures = dict(
        gather_dim1=median_ms(lambda: above.index_select(1, parent), 9),
        gather_dim0=median_ms(lambda: flat.index_select(0, rows), 9),
        add_dim1=median_ms(lambda: above.index_add(1, parent, child), 9),
        add_dim0=median_ms(lambda: flat.index_add(
            0, rows, child.view(-1, channels)), 9))
    print(f'[{heads}, {parents} -> {slots}, {channels}]',
          ' '.join(f'{k} {v:.1f}' for k, v in figures.items()), flush=True)
