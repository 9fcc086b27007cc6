r"""Synthetic hierarchies for tests and benchmarks, in the spirit of PyG's
:class:`~torch_geometric.datasets.FakeDataset`. Real data lives in the other
modules of :mod:`hsa_graph.datasets`."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor
from torch_geometric.data import InMemoryDataset

from ..hierarchy import Hierarchy

__all__ = ['balanced_parent', 'ragged_parent', 'FakeHierarchyDataset']


def _stack_levels(level_sizes: List[Tensor], num_leaves: int) -> Tensor:
    # level_sizes[d]: the family sizes grouping level d's nodes into level
    # d + 1's (counting from the leaves up). Nodes are numbered root first.
    counts = [num_leaves] + [s.numel() for s in level_sizes]
    offsets, total = [], 0
    for count in reversed(counts):
        offsets.insert(0, total)
        total += count
    parent = torch.full((total, ), -1, dtype=torch.long)
    for level, sizes in enumerate(level_sizes):
        group = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
        parent[offsets[level]:offsets[level] + counts[level]] = \
            offsets[level + 1] + group
    return parent


def balanced_parent(num_leaves: int, branching: int) -> Tensor:
    r"""Parent vector of a tree whose leaves are grouped :obj:`branching` at a
    time, level by level, up to one root (the last family of a level may be
    smaller). Node 0 is the root; the leaves come last, in order."""
    if num_leaves < 1 or branching < 2:
        raise ValueError('need num_leaves >= 1 and branching >= 2')
    sizes, count = [], num_leaves
    while count > 1:
        full, rest = divmod(count, branching)
        level = torch.full((full, ), branching, dtype=torch.long)
        if rest:
            level = torch.cat([level, torch.tensor([rest])])
        sizes.append(level)
        count = level.numel()
    return _stack_levels(sizes, num_leaves)


def ragged_parent(num_leaves: int, branching: int,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Like :func:`balanced_parent`, but every family's size is drawn
    uniformly from ``1 .. 2 * branching - 1`` (mean :obj:`branching`), so
    family sizes vary widely and single-child chains occur."""
    if num_leaves < 1 or branching < 2:
        raise ValueError('need num_leaves >= 1 and branching >= 2')
    sizes, count = [], num_leaves
    while count > 1:
        draws = torch.randint(1, 2 * branching, (count, ), generator=generator)
        ends = torch.cumsum(draws, 0)
        keep = int((ends < count).sum())
        level = torch.cat([draws[:keep],
                           torch.tensor([count - int(ends[keep - 1])
                                         if keep else count])])
        level = level[level > 0]
        if level.numel() == count:          # no progress: merge in pairs
            level = torch.full((count // 2, ), 2, dtype=torch.long)
            if count % 2:
                level[-1] += 1
        sizes.append(level)
        count = level.numel()
    return _stack_levels(sizes, num_leaves)


class FakeHierarchyDataset(InMemoryDataset):
    r"""Random hierarchies with Gaussian leaf features and a random class
    label per tree, for tests and benchmarks.

    Args:
        num_graphs (int): number of trees. (default: :obj:`100`)
        avg_num_leaves (int): mean number of leaves per tree.
            (default: :obj:`64`)
        branching (int): mean family size. (default: :obj:`4`)
        num_channels (int): feature size. (default: :obj:`16`)
        num_classes (int): number of labels. (default: :obj:`2`)
        ragged (bool): draw family sizes (see :func:`ragged_parent`).
            (default: :obj:`True`)
        seed (int): random seed. (default: :obj:`0`)
    """
    def __init__(self, num_graphs: int = 100, avg_num_leaves: int = 64,
                 branching: int = 4, num_channels: int = 16,
                 num_classes: int = 2, ragged: bool = True, seed: int = 0,
                 transform=None):
        super().__init__(None, transform)
        generator = torch.Generator().manual_seed(seed)
        data_list = []
        for _ in range(num_graphs):
            leaves = int(torch.randint(max(1, avg_num_leaves // 2),
                                       avg_num_leaves * 3 // 2 + 1, (1, ),
                                       generator=generator))
            parent = (ragged_parent(leaves, branching, generator) if ragged
                      else balanced_parent(leaves, branching))
            x = torch.randn(parent.numel(), num_channels, generator=generator)
            y = torch.randint(num_classes, (1, ), generator=generator)
            data_list.append(Hierarchy.from_parent(parent, x=x, y=y))
        self.data, self.slices = self.collate(data_list)
