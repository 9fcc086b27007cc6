r"""`TreeLayout`: everything HSA needs that depends on the tree alone, built
once per sample or batch (in the DataLoader's workers, see
:mod:`hsa_graph.loader`) with vectorised code, and moved to the device with
the batch.

The dynamic program works level by level on **family blocks**. Level ``d``
holds the nodes at depth ``d``, grouped by parent into ``F`` families, each
padded to the level's largest family size ``B``: a level is ``F * B``
*slots*, so its families are a free ``[F, B]`` view of any per-slot tensor.
Sums over children are sums over that view's last dimension (sorted,
deterministic, no atomics); a parent's value reaches its children by one
gather of ``F`` rows. Padding slots stand in for no node: every mask
here keeps them out of the results.

Families are ordered by their parent's slot, members by node id; the roots
form level 0, one family of size 1 per tree (trees never see each other).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, fields
from typing import Dict, List, Optional

import torch
from torch import Tensor

__all__ = ['TreeLayout', 'LevelLayout', 'attention_dtype',
           'parent_from_edge_index', 'tree_layout']

# Stand-ins for minus infinity, finite so that no arithmetic ever sees an
# infinity (no NaN, forward or backward). NO_KEY is the logit of a key that is
# not there (padding, the query itself); NO_INNER is -phi(A) of a one-leaf
# subtree without self-attention. NO_KEY << NO_INNER, so that for a node
# without siblings logZ = logaddexp(-phi, -eta) = -phi even when -phi is
# NO_INNER: then mu = 1 and 1 - mu = 0 exactly, with no mask.
NO_KEY = -1e32
NO_INNER = -1e30


def _map_tensors(obj, fn):
    r"""A copy of a layout dataclass with :obj:`fn` applied to its tensors."""
    def apply(value):
        if isinstance(value, Tensor):
            return fn(value)
        if isinstance(value, list):
            return [apply(v) for v in value]
        if isinstance(value, (LevelLayout, TreeLayout)):
            return _map_tensors(value, fn)
        return value
    return type(obj)(**{f.name: apply(getattr(obj, f.name))
                        for f in fields(obj)})


@dataclass
class LevelLayout:
    r"""One depth level of a forest as ``F`` families of ``B`` slots.

    Which slots are leaves, inner nodes or padding is data (tensors), not
    Python flags: the passes run the same operations on every level, so a
    compiled graph depends on the tree's height alone. Every per-slot tensor
    has ``F * B`` entries; the float ones are stored in the layout's dtype
    (see :meth:`TreeLayout.to`), the dtype they are used in.

    Attributes:
        node (Tensor): ``[F * B]`` node id of each slot; ``N`` (one past
            the last node: nothing to read) for padding.
        leaf_node (Tensor): ``[F * B]`` as :obj:`node`, but ``N`` at inner
            nodes too: reading through it reads leaf rows and zeros (an inner
            node's row, NaN or not, never enters).
        real (Tensor): ``[F * B]`` bool, the slot holds a node (not padding).
        leaf (Tensor): ``[F * B]`` float, 1 at leaf slots, else 0.
        count (Tensor): ``[F * B]`` float :math:`n(A)`, the number of leaves
            below (1 on padding; integers, so exact in any float dtype).
        child_weight (Tensor): ``[F * B]`` float :math:`n(A) / n(pa(A))`
            (0 on padding and at the roots).
        inner_base (Tensor): ``[F * B]`` float :math:`-\phi` of a slot
            before its children's terms, without self-attention:
            ``NO_INNER`` at leaves, else 0.
        key_bias (Tensor): ``[F, 1, B]`` float :math:`\log n(C)` of each
            key slot, ``NO_KEY`` on padding: a family's mask is O(B), not
            O(B^2).
        parent_slot (Tensor): ``[F]`` each family's parent slot in the level
            above (empty for level 0).
    """
    node: Tensor
    leaf_node: Tensor
    real: Tensor
    leaf: Tensor
    count: Tensor
    child_weight: Tensor
    inner_base: Tensor
    key_bias: Tensor
    parent_slot: Tensor

    @property
    def num_families(self) -> int:
        return self.key_bias.size(0)

    @property
    def family_size(self) -> int:
        return self.key_bias.size(-1)


@dataclass
class TreeLayout:
    r"""The structure of a rooted forest, shared by every head and layer that
    runs on one batch. Build it with :func:`tree_layout` (or let
    :class:`hsa_graph.loader.DataLoader` build it in its workers); move it
    with :meth:`to` (``batch.to(device)`` moves a batch's layout too).

    The passes read node rows into the levels' slots, and write them back,
    with one gather each way (``functional/_levels.py``).

    Attributes:
        num_nodes (int): number of nodes :math:`N`.
        parent (Tensor): ``[N]`` parent id, ``-1`` for roots.
        depth (Tensor): ``[N]`` depth (roots: 0).
        is_leaf (Tensor): ``[N]`` bool.
        leaf_count (Tensor): ``[N]`` float :math:`n(A)`.
        node_slot (Tensor): ``[N]`` each node's slot within its level.
        node_level_start (Tensor): ``[N]`` the number of slots of the levels
            above the node's.
        node_level_slots (Tensor): ``[N]`` the number of slots of the node's
            level.
        levels (list): one :class:`LevelLayout` per depth.
        num_trees (int): number of roots.
    """
    num_nodes: int
    parent: Tensor
    depth: Tensor
    is_leaf: Tensor
    leaf_count: Tensor
    node_slot: Tensor
    node_level_start: Tensor
    node_level_slots: Tensor
    levels: List[LevelLayout]
    num_trees: int

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def device(self) -> torch.device:
        return self.parent.device

    @property
    def dtype(self) -> torch.dtype:
        r"""The dtype of the float tensors (counts, weights, masks)."""
        return self.leaf_count.dtype

    def to(self, device=None, dtype: Optional[torch.dtype] = None,
           non_blocking: bool = False) -> 'TreeLayout':
        r"""A copy on :obj:`device` (index tensors keep their dtype; with
        :obj:`dtype`, the float tensors are cast to it: store them in the
        dtype the attention computes in, so that it casts nothing)."""
        def move(t: Tensor) -> Tensor:
            cast = dtype if dtype is not None and t.is_floating_point() \
                else t.dtype
            return t.to(device, cast, non_blocking=non_blocking)
        return _map_tensors(self, move)

    def pin_memory(self) -> 'TreeLayout':
        r"""A copy in page-locked memory (for ``pin_memory=True`` loaders)."""
        return _map_tensors(self, Tensor.pin_memory)

    def __repr__(self) -> str:
        sizes = [f'{lv.num_families}x{lv.family_size}' for lv in self.levels]
        return (f'TreeLayout(num_nodes={self.num_nodes}, '
                f'num_trees={self.num_trees}, levels=[{", ".join(sizes)}])')


def attention_dtype(dtype: torch.dtype) -> torch.dtype:
    r"""The dtype HSA computes in for inputs of :obj:`dtype` (float32 for
    half precision: a subtree's sum of float16 values overflows past
    65,504), and so the dtype a layout for them should store."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) \
        else dtype


def parent_from_edge_index(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""Checks a child -> parent :obj:`edge_index` and returns the parent
    vector (``-1`` for roots).

    Raises:
        ValueError: on a malformed :obj:`edge_index`, an index out of range, a
            self-loop, a node with two parents or an empty tree.
        TypeError: when :obj:`edge_index` is not an integer tensor.
    """
    if num_nodes <= 0:
        raise ValueError('A hierarchy needs at least one node (got an empty '
                         'tree)')
    if not isinstance(edge_index, Tensor):
        raise TypeError(f'edge_index must be a tensor, got '
                        f'{type(edge_index).__name__}')
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f'edge_index must have shape [2, E], got '
                         f'{list(edge_index.shape)}')
    if edge_index.is_floating_point() or edge_index.is_complex() or \
            edge_index.dtype == torch.bool:
        raise TypeError(f'edge_index must hold integers, got '
                        f'{edge_index.dtype}')
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


def _depth_and_root(parent: Tensor):
    r"""Depth and root of every node by pointer doubling: O(N log height)
    vectorised work; a node on a cycle never reaches a root."""
    num_nodes = parent.numel()
    is_root = parent < 0
    if not bool(is_root.any()):
        raise ValueError('The hierarchy has no root: every node has a parent, '
                         'so edge_index contains a cycle')
    jump = torch.where(is_root, torch.arange(num_nodes), parent)
    depth = (~is_root).long()
    for _ in range(max(1, math.ceil(math.log2(num_nodes + 1))) + 1):
        depth = depth + depth[jump]
        jump = jump[jump]
    in_cycle = ~is_root[jump]
    if bool(in_cycle.any()):
        # Walk from a node that can't reach a root until a node repeats: at
        # most N steps with a set, so rejecting a cycle stays linear.
        seen, path, node = set(), [], int(in_cycle.nonzero()[0])
        parent_list = parent.tolist()
        while node not in seen:
            seen.add(node)
            path.append(node)
            node = parent_list[node]
        cycle = path[path.index(node):]
        raise ValueError(f'edge_index contains a cycle through nodes '
                         f'{cycle[:10]}; a hierarchy must be a tree')
    return depth, jump


def _build(parent: Tensor) -> TreeLayout:
    r"""The layout of a validated parent vector (on the CPU)."""
    num_nodes = parent.numel()
    depth, _ = _depth_and_root(parent)
    is_child = parent >= 0
    child_count = torch.bincount(parent[is_child], minlength=num_nodes)
    is_leaf = child_count == 0
    num_levels = int(depth.max()) + 1

    # Nodes by depth (ties by id): level d is by_depth[ptr[d]:ptr[d + 1]].
    by_depth = torch.sort(depth, stable=True).indices
    ptr = [0] + torch.cumsum(torch.bincount(depth, minlength=num_levels),
                             0).tolist()
    leaf_count = is_leaf.double()
    for d in range(num_levels - 1, 0, -1):
        nodes = by_depth[ptr[d]:ptr[d + 1]]
        leaf_count.index_add_(0, parent[nodes], leaf_count[nodes])

    slot = torch.empty(num_nodes, dtype=torch.long)   # slot within its level
    levels: List[dict] = []
    for d in range(num_levels):
        nodes = by_depth[ptr[d]:ptr[d + 1]]
        if d == 0:              # each root is a family of one
            fam = torch.arange(nodes.numel())
            position = torch.zeros_like(fam)
            size, parent_slot = 1, torch.empty(0, dtype=torch.long)
        else:                   # families in their parents' slot order
            nodes = nodes[torch.sort(slot[parent[nodes]], stable=True).indices]
            parent_slots = slot[parent[nodes]]
            new = torch.ones_like(nodes, dtype=torch.bool)
            new[1:] = parent_slots[1:] != parent_slots[:-1]
            fam = torch.cumsum(new.long(), 0) - 1
            start = new.nonzero().flatten()
            position = torch.arange(nodes.numel()) - start[fam]
            size = int(child_count[parent[nodes]].max())
            parent_slot = parent_slots[start]
        slot[nodes] = fam * size + position
        num_families = int(fam[-1]) + 1
        levels.append(dict(nodes=nodes, fam=fam, size=size,
                           num_families=num_families, parent_slot=parent_slot))

    out: List[LevelLayout] = []
    offset = 0
    level_start = torch.empty(num_nodes, dtype=torch.long)
    level_slots = torch.empty(num_nodes, dtype=torch.long)
    for d, info in enumerate(levels):
        nodes, size = info['nodes'], info['size']
        num_slots = info['num_families'] * size
        at = slot[nodes]
        node = torch.full((num_slots, ), num_nodes, dtype=torch.long)
        node[at] = nodes

        def per_slot(values: Tensor, fill) -> Tensor:
            full = torch.full((num_slots, ), fill, dtype=values.dtype)
            full[at] = values[nodes]
            return full

        count = per_slot(leaf_count, 0.)           # 0 on padding, for now
        leaf = per_slot(is_leaf, False)
        weight = count / per_slot(leaf_count[parent.clamp(min=0)], 1.)
        out.append(LevelLayout(
            node=node, leaf_node=torch.where(leaf, node, num_nodes),
            real=count > 0, leaf=leaf.double(),
            count=count.clamp(min=1),
            child_weight=weight if d > 0 else torch.zeros_like(count),
            inner_base=leaf.double() * NO_INNER,
            key_bias=torch.where(count > 0, count.clamp(min=1).log(),
                                 NO_KEY).view(-1, 1, size),
            parent_slot=info['parent_slot']))
        level_start[nodes] = offset
        level_slots[nodes] = num_slots
        offset += num_slots
    return TreeLayout(num_nodes=num_nodes, parent=parent, depth=depth,
                      is_leaf=is_leaf, leaf_count=leaf_count,
                      node_slot=slot, node_level_start=level_start,
                      node_level_slots=level_slots, levels=out,
                      num_trees=int((~is_child).sum()))


class _LayoutCache:
    r"""The layouts of the last few :obj:`edge_index` tensors, keyed by object
    identity and version, so that one-off calls on one batch (several heads,
    layers or a zero-shot model's patched layers) build the structure once.
    Training loops should not rely on it: the loader builds layouts."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self.entries: Dict[int, tuple] = {}

    def get(self, edge_index: Tensor, num_nodes: int, device: torch.device,
            dtype: torch.dtype) -> TreeLayout:
        entry = self.entries.get(id(edge_index))
        if entry is None or entry[0]() is not edge_index or \
                entry[1] != edge_index._version or entry[2] != num_nodes:
            entry = (weakref.ref(edge_index), edge_index._version, num_nodes,
                     {}, _build(parent_from_edge_index(edge_index, num_nodes)))
            if len(self.entries) >= self.capacity:
                self.entries.pop(next(iter(self.entries)))
            self.entries[id(edge_index)] = entry
        copies, built = entry[3], entry[4]     # float64 on the CPU: exact
        if (device, dtype) not in copies:
            copies[device, dtype] = built.to(device, dtype)
        return copies[device, dtype]


_CACHE = _LayoutCache()


def tree_layout(edge_index: Tensor, num_nodes: Optional[int] = None,
                device=None, dtype: torch.dtype = torch.float64,
                cache: bool = True) -> TreeLayout:
    r"""Validates a forest given as child -> parent :obj:`edge_index` and
    returns its :class:`TreeLayout`.

    The structure is built on the CPU with vectorised tensor code (one
    Python step per depth level, none per node), in float64, and then moved
    to :obj:`device` and cast to :obj:`dtype`. In training, let
    :class:`hsa_graph.loader.DataLoader` build it in its workers; this
    function is for one-off use.

    Args:
        edge_index (torch.Tensor): ``[2, E]`` child -> parent edges.
        num_nodes (int, optional): number of nodes; inferred from
            :obj:`edge_index` when omitted (which misses isolated nodes, such
            as a one-node tree, so pass it when you can).
        device (torch.device, optional): where the layout's tensors live
            (default: :obj:`edge_index`'s device).
        dtype (torch.dtype): the dtype of its float tensors: the dtype the
            attention computes in (float32 for half inputs), so that it casts
            nothing. (default: :obj:`torch.float64`, exact for every input)
        cache (bool): reuse the layout built for this very tensor (until it
            is modified in place). (default: :obj:`True`)
    """
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 1
    device = torch.device(device) if device is not None else edge_index.device
    if cache:
        return _CACHE.get(edge_index, int(num_nodes), device, dtype)
    return _build(parent_from_edge_index(edge_index, int(num_nodes))).to(
        device, dtype)
