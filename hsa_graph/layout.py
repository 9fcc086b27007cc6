r"""The cached structure of a forest: everything HSA needs that depends on the
tree alone (levels, families, leaf counts), computed once per batch.

Nodes are renumbered into *level order*: sorted by depth, then by parent, then
by original id. Every level is then a contiguous slice and every family (the
children of one node) a contiguous run inside it, so the numeric passes are
plain slices, gathers and sorted segment sums with no Python loop over nodes.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ['TreeLayout', 'FamilyBucket', 'parent_from_edge_index',
           'tree_layout']


@dataclass
class FamilyBucket:
    r"""Families (sibling groups of size >= 2) padded to one common size.

    Attributes:
        member_index (Tensor): ``[F, B]`` level-order ids of the members;
            padding points at the dummy row ``num_nodes``.
        member_valid (Tensor): ``[F, B]`` bool, ``False`` on padding.
        sibling_mask (Tensor): ``[F, 1, B, B]`` additive logit mask:
            ``log n(C)`` for a real key ``C`` that is not the query itself,
            ``-inf`` on the diagonal and on padded keys.
    """
    member_index: Tensor
    member_valid: Tensor
    sibling_mask: Tensor

    @property
    def size(self) -> int:
        return self.member_index.size(1)


@dataclass
class TreeLayout:
    r"""Structure of a rooted forest in level order, shared by every head and
    layer that runs on the same batch. Build it with :func:`tree_layout` or
    :meth:`Hierarchy.layout`.

    Attributes named ``*_lo`` are indexed by level-order position; ``order``
    maps level-order positions to original node ids and ``rank`` the reverse.
    """
    num_nodes: int
    order: Tensor            # [N] level-order position -> node id
    rank: Tensor             # [N] node id -> level-order position
    parent: Tensor           # [N] node id -> parent id, -1 for roots
    depth: Tensor            # [N] root depth is 0
    level_ptr: List[int]     # level d holds positions level_ptr[d]:level_ptr[d+1]
    parent_local: List[Optional[Tensor]]  # level d: parent offsets into level d-1
    level_child_count: List[Tensor]       # level d: number of children per node
    is_leaf_lo: Tensor       # [N] bool
    leaf_count_lo: Tensor    # [N] n(A), float
    parent_weight_lo: Tensor  # [N] n(A) / n(pa(A)), 0 for roots
    has_siblings_lo: Tensor  # [N] bool
    family_slot_lo: Tensor   # [N] row into the concatenated family outputs; S for none
    buckets: List[FamilyBucket] = field(default_factory=list)
    num_sibling_nodes: int = 0
    num_trees: int = 0

    @property
    def num_levels(self) -> int:
        return len(self.level_ptr) - 1

    @property
    def is_leaf(self) -> Tensor:
        r"""``[N]`` bool, in original node order."""
        return self.is_leaf_lo[self.rank]

    @property
    def leaf_count(self) -> Tensor:
        r"""``[N]`` number of leaves below each node, in original order."""
        return self.leaf_count_lo[self.rank]

    def level_slice(self, level: int) -> slice:
        return slice(self.level_ptr[level], self.level_ptr[level + 1])

    def to(self, device) -> 'TreeLayout':
        r"""Returns a copy with every tensor moved to :obj:`device`."""
        def move(value):
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, list):
                return [move(v) for v in value]
            if isinstance(value, FamilyBucket):
                return FamilyBucket(*(move(getattr(value, f)) for f in (
                    'member_index', 'member_valid', 'sibling_mask')))
            return value

        return TreeLayout(**{k: move(v) for k, v in self.__dict__.items()})

    @property
    def device(self) -> torch.device:
        return self.order.device


def parent_from_edge_index(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""Checks a child -> parent :obj:`edge_index` and returns the parent
    vector (``-1`` for roots).

    Raises:
        ValueError: on a malformed :obj:`edge_index`, an index out of range, a
            self-loop, a node with two parents, a cycle or an empty tree.
    """
    if num_nodes <= 0:
        raise ValueError('A hierarchy needs at least one node (got an empty '
                         'tree)')
    if not isinstance(edge_index, Tensor):
        raise ValueError(f'edge_index must be a tensor, got '
                         f'{type(edge_index).__name__}')
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f'edge_index must have shape [2, E], got '
                         f'{list(edge_index.shape)}')
    if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
        raise ValueError(f'edge_index must hold integers, got {edge_index.dtype}')
    edge_index = edge_index.detach().to('cpu', torch.long)
    child, par = edge_index[0], edge_index[1]
    if edge_index.numel() > 0:
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= num_nodes:
            bad = low if low < 0 else high
            raise ValueError(f'edge_index refers to node {bad}, but the '
                             f'hierarchy has {num_nodes} nodes (valid ids: '
                             f'0..{num_nodes - 1})')
    loops = (child == par).nonzero().flatten()
    if loops.numel() > 0:
        node = int(child[loops[0]])
        raise ValueError(f'Node {node} is its own parent (a self-loop in '
                         f'edge_index)')
    num_parents = torch.bincount(child, minlength=num_nodes)
    if num_parents.numel() > 0 and int(num_parents.max()) > 1:
        node = int((num_parents > 1).nonzero()[0])
        parents = par[child == node].tolist()
        raise ValueError(f'Node {node} has {len(parents)} parents {parents}; '
                         f'a hierarchy is a tree (child -> parent edges, one '
                         f'parent per node)')
    parent = torch.full((num_nodes, ), -1, dtype=torch.long)
    parent[child] = par
    return parent


def _depth_and_root(parent: Tensor) -> Tuple[Tensor, Tensor]:
    # Pointer doubling: O(N log height), and a cycle never reaches a root.
    num_nodes = parent.numel()
    is_root = parent < 0
    if not bool(is_root.any()):
        raise ValueError('The hierarchy has no root: every node has a parent, '
                         'so edge_index contains a cycle')
    arange = torch.arange(num_nodes)
    jump = torch.where(is_root, arange, parent)
    dist = (~is_root).long()
    for _ in range(max(1, math.ceil(math.log2(num_nodes + 1))) + 1):
        dist = dist + dist[jump]
        jump = jump[jump]
    # A node in a cycle jumps forever among non-roots.
    in_cycle = ~is_root[jump]
    if bool(in_cycle.any()):
        node = int(in_cycle.nonzero()[0])
        cycle, cur = [], node
        for _ in range(num_nodes):
            cur = int(parent[cur])
            if cur in cycle:
                cycle = cycle[cycle.index(cur):]
                break
            cycle.append(cur)
        raise ValueError(f'edge_index contains a cycle through nodes '
                         f'{cycle[:10]}; a hierarchy must be a tree')
    return dist, jump


def _build(parent: Tensor, num_nodes: int, exact_bucket_limit: int = 8
           ) -> TreeLayout:
    depth, root = _depth_and_root(parent)
    num_levels = int(depth.max()) + 1
    key = depth * (num_nodes + 1) + (parent + 1)
    order = torch.sort(key, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_nodes)
    level_ptr = [0] + torch.cumsum(
        torch.bincount(depth, minlength=num_levels), 0).tolist()

    parent_lo = torch.where(parent[order] >= 0, rank[parent[order].clamp(min=0)],
                            torch.full_like(order, -1))
    child_count_lo = torch.bincount(parent_lo[parent_lo >= 0],
                                    minlength=num_nodes)
    is_leaf_lo = child_count_lo == 0

    leaf_count_lo = is_leaf_lo.long().clone()
    parent_local: List[Optional[Tensor]] = [None]
    level_child_count: List[Tensor] = []
    for level in range(num_levels):
        lo, hi = level_ptr[level], level_ptr[level + 1]
        level_child_count.append(child_count_lo[lo:hi])
        if level > 0:
            parent_local.append(parent_lo[lo:hi] - level_ptr[level - 1])
    for level in range(num_levels - 1, 0, -1):
        lo, hi = level_ptr[level], level_ptr[level + 1]
        leaf_count_lo.index_add_(0, parent_lo[lo:hi], leaf_count_lo[lo:hi].clone())

    non_root = parent_lo >= 0
    parent_weight_lo = torch.zeros(num_nodes, dtype=torch.float64)
    parent_weight_lo[non_root] = (leaf_count_lo[non_root].double() /
                                  leaf_count_lo[parent_lo[non_root]].double())
    family_size_lo = torch.zeros(num_nodes, dtype=torch.long)
    family_size_lo[non_root] = child_count_lo[parent_lo[non_root]]
    has_siblings_lo = family_size_lo >= 2

    # Families of size >= 2, grouped into buckets of one padded size.
    family_start = torch.full((num_nodes, ), num_nodes, dtype=torch.long)
    positions = torch.arange(num_nodes)
    family_start.scatter_reduce_(0, parent_lo[non_root], positions[non_root],
                                 reduce='amin')
    family_parents = ((child_count_lo >= 2).nonzero().flatten())
    sizes = child_count_lo[family_parents]
    distinct = torch.unique(sizes)
    if distinct.numel() <= exact_bucket_limit:
        padded = sizes
    else:
        padded = 2**torch.ceil(torch.log2(sizes.double())).long()
    buckets: List[FamilyBucket] = []
    slot_lo = torch.full((num_nodes, ), -1, dtype=torch.long)
    offset = 0
    for size in torch.unique(padded).tolist():
        chosen = padded == size
        starts = family_start[family_parents[chosen]]
        real = sizes[chosen]
        slot = torch.arange(size)
        member_valid = slot[None, :] < real[:, None]
        member_index = torch.where(member_valid, starts[:, None] + slot,
                                   torch.full_like(member_valid, num_nodes,
                                                   dtype=torch.long))
        log_count = torch.full(member_valid.shape, -math.inf,
                               dtype=torch.float64)
        log_count[member_valid] = torch.log(
            leaf_count_lo[member_index[member_valid]].double())
        sibling_mask = log_count[:, None, None, :].expand(
            -1, 1, size, size).clone()
        sibling_mask[..., slot, slot] = -math.inf
        valid_flat = member_valid.flatten().nonzero().flatten()
        slot_lo[member_index.flatten()[valid_flat]] = offset + valid_flat
        offset += member_valid.numel()
        buckets.append(FamilyBucket(member_index, member_valid, sibling_mask))
    # Nodes without siblings read the padding row `offset` (an empty family).
    slot_lo[slot_lo < 0] = offset

    return TreeLayout(
        num_nodes=num_nodes, order=order, rank=rank, parent=parent,
        depth=depth, level_ptr=level_ptr, parent_local=parent_local,
        level_child_count=level_child_count, is_leaf_lo=is_leaf_lo,
        leaf_count_lo=leaf_count_lo.double(),
        parent_weight_lo=parent_weight_lo, has_siblings_lo=has_siblings_lo,
        family_slot_lo=slot_lo, buckets=buckets, num_sibling_nodes=offset,
        num_trees=int((parent < 0).sum()))


class _LayoutCache:
    r"""Remembers the layouts of the last few :obj:`edge_index` tensors, keyed
    by object identity and version, so repeated calls on one batch (heads,
    layers, epochs over a cached dataset) build the structure once."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self.entries: Dict[int, tuple] = {}

    def get(self, edge_index: Tensor, num_nodes: int, device) -> TreeLayout:
        key = id(edge_index)
        entry = self.entries.get(key)
        if entry is not None:
            ref, version, cached_nodes, layouts = entry
            if (ref() is edge_index and version == edge_index._version
                    and cached_nodes == num_nodes):
                if device not in layouts:
                    layouts[device] = next(iter(layouts.values())).to(device)
                return layouts[device]
        layout = _build(parent_from_edge_index(edge_index, num_nodes),
                        num_nodes).to(device)
        if len(self.entries) >= self.capacity:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = (weakref.ref(edge_index), edge_index._version,
                             num_nodes, {device: layout})
        return layout


_CACHE = _LayoutCache()


def tree_layout(edge_index: Tensor, num_nodes: Optional[int] = None,
                device=None, cache: bool = True) -> TreeLayout:
    r"""Validates a forest given as child -> parent :obj:`edge_index` and
    returns its :class:`TreeLayout`.

    The result is cached per :obj:`edge_index` object (and invalidated when
    the tensor is modified in place), so every head and layer that runs on
    the same batch reuses one layout.

    Args:
        edge_index (torch.Tensor): ``[2, E]`` child -> parent edges.
        num_nodes (int, optional): number of nodes; inferred from
            :obj:`edge_index` when omitted (which misses isolated nodes, such
            as a one-node tree, so pass it when you can).
        device (torch.device, optional): where the layout's tensors live
            (default: :obj:`edge_index`'s device).
        cache (bool): reuse a cached layout for this tensor.
            (default: :obj:`True`)
    """
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 1
    device = torch.device(device) if device is not None else edge_index.device
    if cache:
        return _CACHE.get(edge_index, int(num_nodes), device)
    return _build(parent_from_edge_index(edge_index, int(num_nodes)),
                  int(num_nodes)).to(device)
