r"""Forests and inputs shared by the tests of the level machinery."""
import torch

from hsa_graph import Hierarchy


def forest_of(parents, relabel_seed=None):
    r"""A forest from per-tree parent vectors (each stored root first, level
    by level, as PyG batches them); with :obj:`relabel_seed` the node ids
    are shuffled."""
    pieces, offset = [], 0
    for parent in parents:
        pieces.append(torch.where(parent >= 0, parent + offset, parent))
        offset += parent.numel()
    parent = torch.cat(pieces)
    if relabel_seed is not None:
        gen = torch.Generator().manual_seed(relabel_seed)
        perm = torch.randperm(parent.numel(), generator=gen)  # old -> new
        relabelled = torch.full_like(parent, -1)
        has = parent >= 0
        relabelled[perm[has]] = perm[parent[has]]
        parent = relabelled
    return Hierarchy.from_parent(parent, validate=False)   # a forest


def qkv(num_nodes, heads=2, channels=3, value_channels=4, seed=0):
    r"""Float64 ``[N, H, C]`` queries and keys, ``[N, H, Cv]`` values."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(num_nodes, heads, c, generator=gen,
                        dtype=torch.float64)
            for c in (channels, channels, value_channels)]
