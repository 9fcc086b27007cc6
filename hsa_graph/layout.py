r"""The cached structure of a forest: everything HSA needs that depends on the
tree alone (levels, families, leaf counts), computed once per batch.

Nodes are renumbered into *level order*: sorted by depth, then by their
parent's level-order position, then by original id. Every level is then a contiguous slice and every family (the
children of one node) a contiguous run inside it, so the numeric passes are
plain slices, gathers and sorted segment sums with no Python loop over nodes.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

__all__ = ['TreeLayout', 'LevelLayout', 'FamilyBucket', 'Bucketing',
           'bucketing_for', 'parent_from_edge_index', 'tree_layout']


@dataclass
class FamilyBucket:
    r"""Families (sibling groups of size >= 2) of one level, padded to one
    common size :obj:`size`.

    Attributes:
        member_index (Tensor): ``[F, B]`` level-local positions of the
            members; padding repeats a real member (its logit is masked).
        sibling_mask (Tensor): ``[F, 1, B, B]`` additive logit mask (float64):
            ``log n(C)`` for a real key ``C`` other than the query, ``-inf``
            on the diagonal and on padded keys.
        contiguous_start (int, optional): set when the members are exactly
            the level-local positions ``start .. start + F * B - 1`` (no
            padding), so they can be read as a view instead of a gather.
    """
    member_index: Tensor
    sibling_mask: Tensor
    contiguous_start: Optional[int] = None

    @property
    def size(self) -> int:
        return self.member_index.size(1)

    @property
    def num_families(self) -> int:
        return self.member_index.size(0)


@dataclass
class LevelLayout:
    r"""Structure of one depth level of a forest, in level order.

    Attributes:
        size (int): number of nodes at this depth.
        node_ids (Tensor): ``[size]`` original ids of the level's nodes.
        parent_local (Tensor, optional): offsets of the parents in the level
            above (``None`` for the roots' level).
        leaf_kind (str): ``'all'``, ``'none'`` or ``'mixed'``: whether the
            level's nodes are leaves, which lets passes skip masks.
        is_leaf (Tensor): ``[size]`` bool.
        leaf_count (Tensor): ``[size]`` float64 :math:`n(A)`.
        parent_weight (Tensor): ``[size]`` float64 :math:`n(A) / n(pa(A))`.
        has_siblings (Tensor): ``[size]`` bool.
        buckets (list): the level's :class:`FamilyBucket` s.
        family_slot (Tensor, optional): row of each node in the concatenated
            bucket outputs, with one extra "no siblings" row at the end;
            ``None`` when the level is exactly one contiguous bucket.
        uniform_fanout (bool): every node of this level has the same number
            of children (at least one), so the next level is the parents'
            families back to back and a parent-child pass is a reshape
            (a sum over a view up, a broadcast down) instead of a scatter
            or a gather.
        stand_in_rows (Tensor, optional): on a level of an
            :attr:`TreeLayout.aligned` layout that holds stand-in nodes,
            their level positions.
    """
    size: int
    node_ids: Tensor
    parent_local: Optional[Tensor]
    leaf_kind: str
    is_leaf: Tensor
    leaf_count: Tensor
    parent_weight: Tensor
    has_siblings: Tensor
    buckets: List[FamilyBucket]
    family_slot: Optional[Tensor]
    uniform_fanout: bool = False
    stand_in_rows: Optional[Tensor] = None

    @property
    def sibling_kind(self) -> str:
        if not self.buckets:
            return 'none'
        return 'all' if self.family_slot is None else 'mixed'


@dataclass
class TreeLayout:
    r"""Structure of a rooted forest in level order, shared by every head and
    layer that runs on the same batch. Build it with :func:`tree_layout` or
    :meth:`Hierarchy.layout`.

    Attributes named ``*_lo`` are indexed by level-order position; ``order``
    maps level-order positions to original node ids and ``rank`` the reverse.

    ``aligned`` is set when the trees of a forest have different heights:
    the same forest with every tree's deepest leaves on the last level, for
    the attention's dynamic program. A shorter tree's root gets a chain of
    single-child stand-in ancestors (ids from ``num_nodes`` on; their
    layout's ``virtual_from``), which changes no attention weight (a node
    without siblings passes its whole mass on) but keeps each level all
    leaves or all inner nodes in a batch of trees of unequal depth, instead
    of mixing one tree's leaves into another's inner levels.
    """
    num_nodes: int
    order: Tensor            # [N] level-order position -> node id
    rank: Tensor             # [N] node id -> level-order position
    identity_order: bool     # order == arange(N): no permutation needed
    parent: Tensor           # [N] node id -> parent id, -1 for roots
    depth: Tensor            # [N] root depth is 0
    level_ptr: List[int]     # level d holds positions level_ptr[d]:level_ptr[d+1]
    parent_local: List[Optional[Tensor]]  # level d: parent offsets into level d-1
    is_leaf_lo: Tensor       # [N] bool
    leaf_count_lo: Tensor    # [N] n(A), float64
    levels: List[LevelLayout] = field(default_factory=list)
    num_trees: int = 0
    # Runs of consecutive node ids within a level, in node order, as
    # (level, offset in level, length); None when the runs are too short to
    # beat an index gather (or for compile-friendly layouts). level_runs
    # holds the same runs per level, in level order, as (node start, length).
    node_segments: Optional[List[Tuple[int, int, int]]] = None
    level_runs: Optional[List[List[Tuple[int, int]]]] = None
    aligned: Optional['TreeLayout'] = None
    virtual_from: Optional[int] = None

    @property
    def num_levels(self) -> int:
        return len(self.level_ptr) - 1

    @property
    def level_sizes(self) -> List[int]:
        return [level.size for level in self.levels]

    @property
    def buckets(self) -> List[FamilyBucket]:
        r"""All family buckets, level by level."""
        return [b for level in self.levels for b in level.buckets]

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
            if isinstance(value, (list, tuple)):
                return type(value)(move(v) for v in value)
            if isinstance(value, (FamilyBucket, LevelLayout, TreeLayout)):
                return type(value)(**{k: move(v) for k, v in
                                      value.__dict__.items()})
            return value

        return move(self)

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


class Bucketing(NamedTuple):
    r"""How a level's families are grouped into padded blocks of one size
    (a bucket). A bucket costs a fixed number of kernels per step (about
    25); padding a family of ``b`` members to ``B`` costs ``B^2 - b^2``
    logit and mixture work and ``B - b`` copied rows.

    With :obj:`bucket_cost` (in units of one ``B^2`` entry of a family
    block), the distinct family sizes are split into the runs that
    minimise ``sum over buckets (families * (B^2 + 8 B)) + bucket_cost *
    buckets`` (exact, by dynamic programming over the sorted sizes).
    Without it, up to :obj:`exact` distinct sizes get a bucket each and
    beyond that sizes are rounded up to powers of two."""
    bucket_cost: Optional[float] = None
    exact: int = 8


# On CPU a kernel starts in microseconds and padding is paid in full (on
# the ragged benchmark forest, 8 x 4,096 leaves, power-of-two blocks did
# 1.7x the real B^2 work); a bucket costs about as much as 2,000 block
# entries there (measured: benchmarks/probes.py buckets). On CUDA a launch
# costs ~5 us whatever the block: at most 8 buckets, then powers of two.
_BUCKETING = {'cpu': Bucketing(bucket_cost=2000.0), 'cuda': Bucketing()}


def bucketing_for(device) -> Bucketing:
    r"""The :class:`Bucketing` used for layouts on :obj:`device`."""
    return _BUCKETING.get(torch.device(device).type, _BUCKETING['cuda'])


def _padded_sizes(sizes: Tensor, bucketing: Bucketing,
                  compile_friendly: bool) -> Tensor:
    r"""The block size each family is padded to (one bucket per size)."""
    if compile_friendly:     # one bucket: every family padded to a power of 2
        return torch.full_like(sizes, 2**math.ceil(math.log2(
            int(sizes.max()))))
    if bucketing.bucket_cost is not None:
        return _cheapest_grouping(sizes, bucketing.bucket_cost)
    if torch.unique(sizes).numel() <= bucketing.exact:
        return sizes
    return 2**torch.ceil(torch.log2(sizes.double())).long()


def _cheapest_grouping(sizes: Tensor, bucket_cost: float) -> Tensor:
    r"""Pads each family to the largest size of its group, the groups being
    the runs of sorted distinct sizes of least total cost (see
    :class:`Bucketing`)."""
    values, counts = torch.unique(sizes, return_counts=True)
    block = values.double()
    block = block * block + 8 * block          # per family padded to it
    families = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    # best[j]: least cost of the first j sizes; start[j - 1]: the first
    # size of the last group in that solution
    best = torch.zeros(len(values) + 1, dtype=torch.float64)
    start = []
    for end in range(1, len(values) + 1):
        # the last group holds sizes first .. end - 1, padded to end - 1
        cost = (best[:end] + (families[end] - families[:end]) *
                block[end - 1] + bucket_cost)
        first = int(torch.argmin(cost))
        best[end] = cost[first]
        start.append(first)
    padded_value = torch.empty_like(values)
    end = len(values)
    while end > 0:
        first = start[end - 1]
        padded_value[first:end] = values[end - 1]
        end = first
    return padded_value[torch.searchsorted(values, sizes)]


def _level_buckets(level_start: int, level_size: int, parents: Tensor,
                   family_start: Tensor, child_count: Tensor,
                   leaf_count: Tensor, bucketing: Bucketing,
                   compile_friendly: bool = False
                   ) -> Tuple[List[FamilyBucket], Optional[Tensor]]:
    # Families whose members sit in this level, grouped by padded size.
    sizes = child_count[parents]
    if parents.numel() == 0:
        return [], None
    padded = _padded_sizes(sizes, bucketing, compile_friendly)
    buckets: List[FamilyBucket] = []
    slot = torch.full((level_size, ), -1, dtype=torch.long)
    offset = 0
    for size in torch.unique(padded).tolist():
        chosen = padded == size
        starts = family_start[parents[chosen]] - level_start
        real = sizes[chosen]
        arange = torch.arange(size)
        valid = arange[None, :] < real[:, None]
        member = torch.where(valid, starts[:, None] + arange,
                             starts[:, None])   # padding repeats member 0
        log_count = torch.full(valid.shape, -math.inf, dtype=torch.float64)
        log_count[valid] = torch.log(
            leaf_count[level_start + member[valid]].double())
        mask = log_count[:, None, None, :].expand(-1, 1, size, size).clone()
        mask[..., arange, arange] = -math.inf
        flat = member.flatten()
        contiguous = None
        if bool(valid.all()) and bool(
                (flat == flat[0] + torch.arange(flat.numel())).all()):
            contiguous = int(flat[0])
        valid_flat = valid.flatten().nonzero().flatten()
        slot[flat[valid_flat]] = offset + valid_flat
        offset += valid.numel()
        buckets.append(FamilyBucket(member, mask, contiguous))
    slot[slot < 0] = offset          # the "no siblings" row
    if compile_friendly:
        for bucket in buckets:       # always gathered: one code path
            bucket.contiguous_start = None
        return buckets, slot
    if (len(buckets) == 1 and buckets[0].contiguous_start == 0
            and offset == level_size):
        return buckets, None
    return buckets, slot


def _uniform_fanout(child_count: Tensor) -> bool:
    # Every node has the same number of children (at least one). Level order
    # puts the next level's families in their parents' order, so the next
    # level is then exactly [children of node 0, children of node 1, ...].
    fanout = int(child_count[0])
    return fanout > 0 and bool((child_count == fanout).all())


def _level_order(parent: Tensor, depth: Tensor,
                 level_ptr: List[int]) -> Tuple[Tensor, Tensor]:
    r"""Level order: by depth, then by the parent's level-order position
    (then by id). Sorting by the parent's position rather than its id makes
    each level's families follow their parents' order whatever the node
    labels are, so a level of equal fan-outs is always a reshape
    (:attr:`LevelLayout.uniform_fanout`)."""
    by_depth = torch.sort(depth, stable=True).indices
    order = torch.empty_like(by_depth)
    rank = torch.empty_like(by_depth)
    for level in range(len(level_ptr) - 1):
        lo, hi = level_ptr[level], level_ptr[level + 1]
        ids = by_depth[lo:hi]
        if level > 0:
            ids = ids[torch.sort(rank[parent[ids]], stable=True).indices]
        order[lo:hi] = ids
        rank[ids] = torch.arange(lo, hi)
    return order, rank


def _aligned_parent(parent: Tensor, depth: Tensor,
                    root: Tensor) -> Optional[Tensor]:
    r"""The parent vector with stand-in ancestors that put every tree's
    deepest node on the forest's last level, or :obj:`None` when the trees
    have one height. A root ``r`` that is ``s`` levels short gets the chain
    ``r -> N + a -> ... -> N + a + s - 1`` (the last one a root)."""
    num_nodes = parent.numel()
    height = torch.zeros(num_nodes, dtype=torch.long).scatter_reduce_(
        0, root, depth, reduce='amax')
    roots = (parent < 0).nonzero().flatten()
    shift = height.max() - height[roots]
    short = shift > 0
    if not bool(short.any()):
        return None
    roots, shift = roots[short], shift[short]
    total = int(shift.sum())
    first = num_nodes + torch.cumsum(shift, 0) - shift
    end = torch.repeat_interleave(first + shift, shift)
    ids = torch.arange(num_nodes, num_nodes + total)
    extended = torch.cat([parent, torch.where(ids + 1 < end, ids + 1, -1)])
    extended[roots] = first
    return extended


def _mark_stand_ins(layout: TreeLayout, num_real: int) -> None:
    r"""Marks the levels of an aligned layout that hold stand-in nodes, and
    drops the stand-ins' runs from the node-order segments (they have no
    rows there; their ids are the largest, so their runs come last)."""
    layout.virtual_from = num_real
    for level in layout.levels:
        real = level.node_ids < num_real
        if not bool(real.all()):
            level.stand_in_rows = (~real).nonzero().flatten()
    if layout.node_segments is not None:
        segments, total = [], 0
        for segment in layout.node_segments:
            if total >= num_real:
                break
            segments.append(segment)
            total += segment[2]
        layout.node_segments = segments


def _build(parent: Tensor, num_nodes: int,
           bucketing: Bucketing = _BUCKETING['cpu'],
           compile_friendly: bool = False) -> TreeLayout:
    depth, root = _depth_and_root(parent)
    layout = _build_levels(parent, depth, num_nodes, bucketing,
                           compile_friendly)
    # Compile-friendly layouts keep one code path (no stand-in rows).
    extended = None if compile_friendly else _aligned_parent(parent, depth,
                                                             root)
    if extended is not None:     # (its trees have one height: no recursion)
        aligned = _build_levels(extended, _depth_and_root(extended)[0],
                                extended.numel(), bucketing, False,
                                num_real=num_nodes)
        _mark_stand_ins(aligned, num_nodes)
        layout.aligned = aligned
    return layout


def _build_levels(parent: Tensor, depth: Tensor, num_nodes: int,
                  bucketing: Bucketing, compile_friendly: bool,
                  num_real: Optional[int] = None) -> TreeLayout:
    num_levels = int(depth.max()) + 1
    level_ptr = [0] + torch.cumsum(
        torch.bincount(depth, minlength=num_levels), 0).tolist()
    order, rank = _level_order(parent, depth, level_ptr)

    parent_lo = torch.where(parent[order] >= 0,
                            rank[parent[order].clamp(min=0)],
                            torch.full_like(order, -1))
    non_root = parent_lo >= 0
    child_count_lo = torch.bincount(parent_lo[non_root], minlength=num_nodes)
    is_leaf_lo = child_count_lo == 0

    leaf_count_lo = is_leaf_lo.long()
    for level in range(num_levels - 1, 0, -1):
        lo, hi = level_ptr[level], level_ptr[level + 1]
        leaf_count_lo.index_add_(0, parent_lo[lo:hi],
                                 leaf_count_lo[lo:hi].clone())
    leaf_count_lo = leaf_count_lo.double()
    parent_weight_lo = torch.zeros(num_nodes, dtype=torch.float64)
    parent_weight_lo[non_root] = (leaf_count_lo[non_root] /
                                  leaf_count_lo[parent_lo[non_root]])
    family_size_lo = torch.zeros(num_nodes, dtype=torch.long)
    family_size_lo[non_root] = child_count_lo[parent_lo[non_root]]
    has_siblings_lo = family_size_lo >= 2
    family_start = torch.full((num_nodes, ), num_nodes, dtype=torch.long)
    positions = torch.arange(num_nodes)
    family_start.scatter_reduce_(0, parent_lo[non_root], positions[non_root],
                                 reduce='amin')

    levels: List[LevelLayout] = []
    parent_local: List[Optional[Tensor]] = []
    for level in range(num_levels):
        lo, hi = level_ptr[level], level_ptr[level + 1]
        local_parent = None
        if level > 0:
            local_parent = parent_lo[lo:hi] - level_ptr[level - 1]
        parent_local.append(local_parent)
        leaf = is_leaf_lo[lo:hi]
        leaf_kind = ('all' if bool(leaf.all()) else
                     'none' if not bool(leaf.any()) else 'mixed')
        if compile_friendly and level < num_levels - 1:
            leaf_kind = 'mixed'      # the general path, right for every level
        buckets, slot = [], None
        if level > 0:
            above = torch.arange(level_ptr[level - 1], lo)
            parents = above[child_count_lo[above] >= 2]
            buckets, slot = _level_buckets(lo, hi - lo, parents,
                                           family_start, child_count_lo,
                                           leaf_count_lo, bucketing,
                                           compile_friendly)
        levels.append(LevelLayout(
            size=hi - lo, node_ids=order[lo:hi], parent_local=local_parent,
            leaf_kind=leaf_kind,
            is_leaf=leaf, leaf_count=leaf_count_lo[lo:hi],
            parent_weight=parent_weight_lo[lo:hi],
            has_siblings=has_siblings_lo[lo:hi], buckets=buckets,
            family_slot=slot))
    for level in range(num_levels - 1):
        lo, hi = level_ptr[level], level_ptr[level + 1]
        levels[level].uniform_fanout = not compile_friendly and \
            _uniform_fanout(child_count_lo[lo:hi])

    segments, runs = (None, None) if compile_friendly else \
        _node_runs(order, level_ptr, num_real)
    return TreeLayout(
        node_segments=segments, level_runs=runs,
        num_nodes=num_nodes, order=order, rank=rank,
        # (stand-in rows are zeros, not node rows: no identity move)
        identity_order=not compile_friendly and num_real is None and bool(
            (order == positions).all()), parent=parent,
        depth=depth, level_ptr=level_ptr, parent_local=parent_local,
        is_leaf_lo=is_leaf_lo, leaf_count_lo=leaf_count_lo, levels=levels,
        num_trees=int((parent < 0).sum()))


def _node_runs(order: Tensor, level_ptr: List[int],
               num_real: Optional[int] = None, min_run: int = 64
               ) -> Tuple[Optional[List[Tuple[int, int, int]]],
                          Optional[List[List[Tuple[int, int]]]]]:
    r"""Splits the level order into runs of consecutive node ids (a batch of
    trees stored level by level has one run per tree and level), so that
    moving rows between node and level order is a few slice copies instead
    of an index gather. Returns the runs in node order as ``(level, offset
    in level, length)`` and per level as ``(node start, length)``; ``None``
    twice when the runs average under :obj:`min_run` rows."""
    num_nodes = order.numel()
    breaks = torch.ones(num_nodes, dtype=torch.bool)
    breaks[1:] = order[1:] != order[:-1] + 1
    if num_real is not None:  # a run is all real nodes or all stand-ins
        breaks[1:] |= order[1:] == num_real
    breaks[torch.tensor(level_ptr[:-1], dtype=torch.long)] = True
    starts = breaks.nonzero().flatten()
    if starts.numel() * min_run > num_nodes:
        return None, None
    lengths = torch.diff(starts, append=torch.tensor([num_nodes]))
    level = torch.bucketize(starts, torch.tensor(level_ptr[1:-1]),
                            right=True)
    offset = starts - torch.tensor(level_ptr)[level]
    runs = list(zip(order[starts].tolist(), level.tolist(), offset.tolist(),
                    lengths.tolist()))
    level_runs: List[List[Tuple[int, int]]] = [[] for _ in level_ptr[1:]]
    for node, depth, _, length in runs:        # level order within a level
        level_runs[depth].append((node, length))
    segments = [run[1:] for run in sorted(runs)]          # node order
    return segments, level_runs


class _LayoutCache:
    r"""Remembers the layouts of the last few :obj:`edge_index` tensors, keyed
    by object identity and version, so repeated calls on one batch (heads,
    layers, epochs over a cached dataset) build the structure once."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self.entries: Dict[int, tuple] = {}

    def get(self, edge_index: Tensor, num_nodes: int, device,
            compile_friendly: bool = False) -> TreeLayout:
        key = (id(edge_index), compile_friendly)
        entry = self.entries.get(key)
        if entry is not None:
            ref, version, cached_nodes, layouts = entry
            if (ref() is edge_index and version == edge_index._version
                    and cached_nodes == num_nodes):
                if device not in layouts:
                    # a copy where the bucketing is the same, else a build
                    same = [layout for other, layout in layouts.items()
                            if bucketing_for(other) == bucketing_for(device)]
                    layouts[device] = same[0].to(device) if same else \
                        _build(parent_from_edge_index(edge_index, num_nodes),
                               num_nodes, bucketing_for(device),
                               compile_friendly).to(device)
                return layouts[device]
        layout = _build(parent_from_edge_index(edge_index, num_nodes),
                        num_nodes, bucketing_for(device),
                        compile_friendly).to(device)
        if len(self.entries) >= self.capacity:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = (weakref.ref(edge_index), edge_index._version,
                             num_nodes, {device: layout})
        return layout


_CACHE = _LayoutCache()


def tree_layout(edge_index: Tensor, num_nodes: Optional[int] = None,
                device=None, cache: bool = True,
                compile_friendly: bool = False) -> TreeLayout:
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
            (default: :obj:`edge_index`'s device). It also picks how
            families of unequal size are batched (:func:`bucketing_for`:
            more, tighter buckets on CPU; fewer kernels on CUDA).
        cache (bool): reuse a cached layout for this tensor.
            (default: :obj:`True`)
        compile_friendly (bool): make every batch take the same code path,
            for :obj:`torch.compile(dynamic=True)` over batches of different
            trees: one family bucket per level (families padded to the
            level's largest power of two), no shortcut for uniform or
            contiguous levels. The compiled graph then depends on the number
            of levels only, instead of on each batch's bucket pattern, at
            the price of padding work in eager mode.
            (default: :obj:`False`)
    """
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 1
    device = torch.device(device) if device is not None else edge_index.device
    if cache:
        return _CACHE.get(edge_index, int(num_nodes), device,
                          compile_friendly)
    return _build(parent_from_edge_index(edge_index, int(num_nodes)),
                  int(num_nodes), bucketing_for(device),
                  compile_friendly).to(device)
