r"""`TreeLayout`: everything HSA needs that depends on the tree alone, built
once per sample or batch (in the DataLoader's workers, see
:mod:`hsa_graph.loader`) with vectorised code, and moved to the device with
the batch.

The dynamic program works level by level. Level ``d`` holds the nodes at
depth ``d`` as *slots*, grouped by parent into families (in their parents'
slot order, members by node id; the roots are families of one: trees never
see each other). Sums over children add each slot's row into its parent's
slot (one ``index_add``, a sorted segment sum under
``torch.use_deterministic_algorithms``); a parent's value reaches its
children by one gather. The sibling softmax needs families as ``[F, B]``
blocks, and a level is stored one of two ways:

* **padded**, while padding every family to the level's widest ``B`` costs
  at most :data:`PAD_LIMIT` times its nodes (balanced trees, windows, full
  cells): ``F * B`` slots, a free ``[F, B]`` view for the softmax and for
  sums and broadcasts over families; padding slots stand for no node;
* **packed**, when more ragged: one slot per node, and the families gathered
  into at most ``size_classes`` (default 2) :class:`FamilyBlock` size
  classes for the softmax, each padded to its own widest family, so a ragged
  level pays for its own families' sizes, not ``F`` times the widest.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, fields
from typing import Dict, List, Optional

import torch
from torch import Tensor

__all__ = ['TreeLayout', 'LevelLayout', 'FamilyBlock', 'attention_dtype',
           'parent_from_edge_index', 'tree_layout']

# Stand-ins for minus infinity, finite so that no arithmetic ever sees an
# infinity (no NaN, forward or backward). NO_KEY is the logit of a key that is
# not there (padding, the query itself); NO_INNER is -phi(A) of a one-leaf
# subtree without self-attention. NO_KEY << NO_INNER, so that for a node
# without siblings logZ = logaddexp(-phi, -eta) = -phi even when -phi is
# NO_INNER: then mu = 1 and 1 - mu = 0 exactly, with no mask.
NO_KEY = -1e32
NO_INNER = -1e30


# Size classes of families per level, at most (tree_layout's default): each
# class costs about 25 operations per step, so more classes trade kernel
# launches for padding. Classes split wherever a level has two distinct
# family sizes (no threshold, so that the batches of a dataset at one height
# mostly share a block structure, and a compiled model a graph).
SIZE_CLASSES = 2
# A level stays padded to its widest family (one free [F, B] view: no gathers,
# the cheapest passes) while that costs at most PAD_LIMIT times its nodes;
# a more ragged level is packed, its families gathered in size classes.
PAD_LIMIT = 1.5


def _map_tensors(obj, fn):
    r"""A copy of a layout dataclass with :obj:`fn` applied to its tensors."""
    def apply(value):
        if isinstance(value, Tensor):
            return fn(value)
        if isinstance(value, list):
            return [apply(v) for v in value]
        if isinstance(value, (FamilyBlock, LevelLayout, TreeLayout)):
            return _map_tensors(value, fn)
        return value
    return type(obj)(**{f.name: apply(getattr(obj, f.name))
                        for f in fields(obj)})


@dataclass
class FamilyBlock:
    r"""The families of one size class of a level, as ``F`` families of
    ``B`` slots (each padded to the class's largest family), for the sibling
    softmax.

    Attributes:
        key_bias (Tensor): ``[F, 1, B]`` float :math:`\log n(C)` of each key
            slot, ``NO_KEY`` on padding: a family's mask is O(B), not O(B^2).
    """
    key_bias: Tensor

    @property
    def num_families(self) -> int:
        return self.key_bias.size(0)

    @property
    def family_size(self) -> int:
        return self.key_bias.size(-1)


@dataclass
class LevelLayout:
    r"""One depth level of a forest as ``S`` slots (padded or packed, see
    the module's docstring), and its families in size classes.

    Which slots are leaves, inner nodes or padding is data (tensors), not
    Python flags. Per-slot float tensors are stored in the layout's dtype
    (see :meth:`TreeLayout.to`), the dtype they are used in.

    Attributes:
        node (Tensor): ``[S]`` node id of each slot; ``N`` (one past the
            last node: nothing to read) for padding.
        leaf_node (Tensor): ``[S]`` as :obj:`node`, but ``N`` at inner
            nodes too: reading through it reads leaf rows and zeros (an inner
            node's row, NaN or not, never enters).
        leaf (Tensor): ``[S]`` float, 1 at leaf slots, else 0.
        count (Tensor): ``[S]`` float :math:`n(A)`, the number of leaves
            below (1 on padding; integers, so exact in any float dtype).
        child_weight (Tensor): ``[S]`` float :math:`n(A) / n(pa(A))` (0 on
            padding and at the roots).
        inner_base (Tensor): ``[S]`` float :math:`-\phi` of a slot before
            its children's terms, without self-attention: ``NO_INNER`` at
            leaves, else 0.
        parent (Tensor): the parent slots in the level above: ``[F]`` one
            per family on a padded level, ``[S]`` one per slot on a packed
            one (empty for level 0).
        blocks (list): the :class:`FamilyBlock` size classes of the families
            with siblings (empty when no node of the level has a sibling;
            one block with no gather on a padded level).
        block_slot (Tensor, optional): ``[sum F * B]`` on a packed level,
            the level slot of every block member, blocks end to end (padding
            repeats its family's first slot; its key is masked, its query's
            result dropped). :obj:`None` on a padded level.
        unpad (Tensor, optional): ``[3, S]`` where each slot's softmax
            result lies in the blocks' ``[H, F * B]`` outputs flattened and
            laid end to end, followed by one filler row for the slots
            without siblings: per slot its position ``p`` counted in one
            head's slots, its block's start ``o`` and size ``F * B``, so
            head ``h`` reads row ``p + (H - 1) o + h F B``. :obj:`None` on
            a padded level.
    """
    node: Tensor
    leaf_node: Tensor
    leaf: Tensor
    count: Tensor
    child_weight: Tensor
    inner_base: Tensor
    parent: Tensor
    blocks: List[FamilyBlock]
    block_slot: Optional[Tensor]
    unpad: Optional[Tensor]

    @property
    def padded(self) -> bool:
        r"""Whether the level is padded (its slots a free ``[F, B]`` view)
        rather than packed."""
        return self.unpad is None


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
        sizes = ['+'.join(f'{b.num_families}x{b.family_size}'
                          for b in lv.blocks) or f'{lv.node.numel()}'
                 for lv in self.levels]
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


def _build(parent: Tensor, size_classes: int = SIZE_CLASSES) -> TreeLayout:
    r"""The layout of a validated parent vector (on the CPU)."""
    num_nodes = parent.numel()
    depth, _ = _depth_and_root(parent)
    is_child = parent >= 0
    is_leaf = torch.bincount(parent[is_child], minlength=num_nodes) == 0
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
    level_start = torch.empty(num_nodes, dtype=torch.long)
    level_slots = torch.empty(num_nodes, dtype=torch.long)
    levels: List[LevelLayout] = []
    offset = 0
    for d in range(num_levels):
        nodes = by_depth[ptr[d]:ptr[d + 1]]
        if d > 0:               # families in their parents' slot order
            nodes = nodes[torch.sort(slot[parent[nodes]], stable=True).indices]
        # Each root is a family of one (trees never see each other).
        up = slot[parent[nodes]] if d > 0 else torch.arange(nodes.numel())
        start, size, family, position = _families(up)
        width = int(size.max())
        padded = size_classes == 1 or \
            width * size.numel() <= PAD_LIMIT * nodes.numel()
        at = family * width + position if padded else \
            torch.arange(nodes.numel())
        num_slots = size.numel() * width if padded else nodes.numel()
        slot[nodes] = at
        level_start[nodes], level_slots[nodes] = offset, num_slots
        offset += num_slots

        def per_slot(values: Tensor, fill) -> Tensor:
            full = torch.full((num_slots, ), fill, dtype=values.dtype)
            full[at] = values
            return full

        count = per_slot(leaf_count[nodes], 1.)
        leaf = per_slot(is_leaf[nodes], False)
        node = per_slot(nodes, num_nodes)
        blocks, block_slot, unpad = [], None, None
        if padded and width > 1:          # one block: the level in order
            key_bias = torch.where(node < num_nodes, count.log(), NO_KEY)
            blocks = [FamilyBlock(key_bias=key_bias.view(-1, 1, width))]
        elif not padded:
            blocks, block_slot, unpad = _family_blocks(
                start, size, family, position, count, size_classes)
        levels.append(LevelLayout(
            node=node, leaf_node=torch.where(leaf, node, num_nodes),
            leaf=leaf.double(), count=count,
            child_weight=per_slot(leaf_count[nodes] /
                                  leaf_count[parent[nodes]], 0.) if d > 0
            else torch.zeros_like(count),
            inner_base=leaf.double() * NO_INNER,
            parent=torch.empty(0, dtype=torch.long) if d == 0 else
            up[start] if padded else up,
            blocks=blocks, block_slot=block_slot, unpad=unpad))
    return TreeLayout(num_nodes=num_nodes, parent=parent, depth=depth,
                      is_leaf=is_leaf, leaf_count=leaf_count,
                      node_slot=slot, node_level_start=level_start,
                      node_level_slots=level_slots, levels=levels,
                      num_trees=int((~is_child).sum()))


def _families(up: Tensor):
    r"""The families of a level's nodes (runs of equal parent slot in
    :obj:`up`): each family's first node and size, each node's family and
    position in it."""
    new = torch.ones(up.numel(), dtype=torch.bool)
    new[1:] = up[1:] != up[:-1]
    start = new.nonzero().flatten()
    size = torch.diff(start, append=torch.tensor([up.numel()]))
    family = torch.cumsum(new.long(), 0) - 1
    return start, size, family, torch.arange(up.numel()) - start[family]


def _family_blocks(start: Tensor, size: Tensor, family: Tensor,
                   position: Tensor, count: Tensor, size_classes: int):
    r"""A packed level's families as :class:`FamilyBlock` size classes, and
    the level's ``block_slot`` and ``unpad`` indices."""
    unpad = torch.full((3, family.numel()), -1, dtype=torch.long)
    blocks: List[FamilyBlock] = []
    slots = [torch.empty(0, dtype=torch.long)]
    low, offset = 1, 0
    for width in _size_classes(size, size_classes):
        members = ((size > low) & (size <= width)).nonzero().flatten()
        low = width
        rank = torch.full_like(size, -1)
        rank[members] = torch.arange(members.numel())
        first = start[members].unsqueeze(1)
        real = torch.arange(width) < size[members].unsqueeze(1)
        block_slot = torch.where(real, first + torch.arange(width), first)
        key_bias = torch.where(real, count[block_slot].log(), NO_KEY)
        mine = rank[family] >= 0
        unpad[0, mine] = offset + rank[family[mine]] * width + position[mine]
        unpad[1, mine] = offset
        unpad[2, mine] = members.numel() * width
        offset += members.numel() * width
        blocks.append(FamilyBlock(key_bias=key_bias.view(-1, 1, width)))
        slots.append(block_slot.flatten())
    alone = unpad[0] < 0                  # no siblings: the filler row
    unpad[:2, alone], unpad[2, alone] = offset, 0
    return blocks, torch.cat(slots), unpad


def _size_classes(size: Tensor, most: int) -> List[int]:
    r"""The largest family size of each size class (ascending), for families
    of :obj:`size` > 1: at most :obj:`most` classes, each split
    greedily where it saves most of the padded softmax cost ``sum F * B *
    (B + 16)`` (a slot weighs like 16 keys)."""
    sizes, counts = torch.unique(size[size > 1], return_counts=True)
    if sizes.numel() == 0:
        return []
    weight = (sizes * (sizes + 16)).double()
    below = torch.cat([torch.zeros(1), counts.cumsum(0).double()])

    def cost(lo, hi):        # classes of sizes[lo:hi], hi (exclusive) top
        return (below[hi] - below[lo]) * weight[hi - 1]

    ends = [sizes.numel()]
    for _ in range(most - 1):
        best, lo = (0.0, None), 0
        for hi in ends:
            if hi - lo > 1:
                cut = torch.arange(lo + 1, hi)
                saving = cost(lo, hi) - cost(lo, cut) - cost(cut, hi)
                # A class of one family only where it halves the cost (one
                # very wide family): torch.compile specialises a size of 1,
                # so such a class compiles a new graph.
                lone = (below[cut] - below[lo] < 2) | (below[hi] - below[cut]
                                                       < 2)
                saving[lone & (saving < cost(lo, hi) / 2)] = 0
                i = int(saving.argmax())
                if float(saving[i]) > best[0]:
                    best = (float(saving[i]), int(cut[i]))
            lo = hi
        if best[1] is None:
            break
        ends = sorted(ends + [best[1]])
    return [int(sizes[end - 1]) for end in ends]


class _LayoutCache:
    r"""The layouts of the last few :obj:`edge_index` tensors, keyed by object
    identity (and ``size_classes``) and version, so that one-off calls on one
    batch (several heads, layers or a zero-shot model's patched layers)
    build the structure once.
    Training loops should not rely on it: the loader builds layouts."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self.entries: Dict[int, tuple] = {}

    def get(self, edge_index: Tensor, num_nodes: int, device: torch.device,
            dtype: torch.dtype, size_classes: int) -> TreeLayout:
        key = (id(edge_index), size_classes)
        entry = self.entries.get(key)
        if entry is None or entry[0]() is not edge_index or \
                entry[1] != edge_index._version or entry[2] != num_nodes:
            entry = (weakref.ref(edge_index), edge_index._version, num_nodes,
                     {}, _build(parent_from_edge_index(edge_index, num_nodes),
                                size_classes))
            if len(self.entries) >= self.capacity:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = entry
        copies, built = entry[3], entry[4]     # float64 on the CPU: exact
        if (device, dtype) not in copies:
            copies[device, dtype] = built.to(device, dtype)
        return copies[device, dtype]


_CACHE = _LayoutCache()


def tree_layout(edge_index: Tensor, num_nodes: Optional[int] = None,
                device=None, dtype: torch.dtype = torch.float64,
                cache: bool = True,
                size_classes: int = SIZE_CLASSES) -> TreeLayout:
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
        size_classes (int): at most this many size classes of families per
            level for the sibling softmax, each padded to its widest family.
            More classes pad less on ragged levels; ``1`` pads every family
            of a level to the widest and gives every batch of one height the
            same block structure (one ``torch.compile`` graph per height over
            ragged batches, see docs/performance.md). (default: :obj:`2`)
    """
    if not isinstance(size_classes, int) or size_classes < 1:
        raise ValueError(f'size_classes must be a positive int, got '
                         f'{size_classes!r}')
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 1
    device = torch.device(device) if device is not None else edge_index.device
    if cache:
        return _CACHE.get(edge_index, int(num_nodes), device, dtype,
                          size_classes)
    return _build(parent_from_edge_index(edge_index, int(num_nodes)),
                  size_classes).to(device, dtype)
