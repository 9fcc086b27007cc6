r"""`Hierarchy`: a rooted tree (a forest once batched) as a PyG graph."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Data

from .layout import (TreeLayout, _depth_and_root, parent_from_edge_index,
                     tree_layout)

__all__ = ['Hierarchy']


class Hierarchy(Data):
    r"""A signal hierarchy: a rooted tree whose leaves carry content, stored as
    a :class:`torch_geometric.data.Data` with child -> parent edges.

    * ``edge_index`` (``[2, E]``): one edge per non-root node, from the child
      to its parent. Roots have no edge, so PyG's batching (which increments
      every ``*index*`` attribute by ``num_nodes``) turns a list of
      hierarchies into a valid forest with no extra code.
    * ``x`` (``[N, F]``, optional): one row per node. Attention reads only the
      leaf rows; converters put zeros (or pooled features) on internal rows.
    * ``pos`` (``[N, P]``, optional): each node's position in its parent's
      domain (a sequence index, a 2-D cell, a 3-D offset...).
    * ``node_type`` (``[N]``, optional): modality of each node, for layers with
      per-modality projections.

    Structure queries (:attr:`parent`, :attr:`depth`, :attr:`leaf_count`,
    ...) go through a cached :class:`~hsa_graph.layout.TreeLayout`, so calling
    several of them costs one structure pass.

    Example::

        >>> h = Hierarchy.from_parent(torch.tensor([-1, 0, 0, 1, 1]))
        >>> h.is_leaf.tolist()
        [False, False, True, True, True]
        >>> h.leaf_count.tolist()
        [3, 2, 1, 1, 1]
    """

    @classmethod
    def from_parent(cls, parent: Union[Tensor, Sequence[int]],
                    x: Optional[Tensor] = None, pos: Optional[Tensor] = None,
                    validate: bool = True, **kwargs: Any) -> 'Hierarchy':
        r"""Builds a hierarchy from a parent vector.

        Args:
            parent (Tensor or list): ``parent[i]`` is the parent of node
                ``i``, or ``-1`` for the root.
            x (Tensor, optional): ``[N, F]`` node features.
            pos (Tensor, optional): ``[N, P]`` positions within the parent.
            validate (bool): check the result with :meth:`validate`.
                (default: :obj:`True`)
            **kwargs: further attributes, stored as given.
        """
        try:
            parent = torch.as_tensor(parent)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f'parent must be a 1-D tensor or list of integer '
                            f'ids, got {type(parent).__name__} ({error})'
                            ) from None
        if parent.dim() != 1:
            raise ValueError(f'parent must be a 1-D vector, got shape '
                             f'{list(parent.shape)}')
        if parent.numel() == 0:
            raise ValueError('parent is empty: a hierarchy needs at least one '
                             'node (give -1 for a lone root)')
        if parent.is_floating_point() or parent.is_complex() or \
                parent.dtype == torch.bool:
            raise ValueError(f'parent must hold integer ids, got {parent.dtype}')
        parent = parent.long()
        child = (parent >= 0).nonzero().flatten()
        if bool((parent < -1).any()):
            bad = int((parent < -1).nonzero()[0])
            raise ValueError(f'parent[{bad}] = {int(parent[bad])}; use -1 for '
                             f'a root and a node id otherwise')
        edge_index = torch.stack([child, parent[child]], dim=0)
        out = cls(x=x, edge_index=edge_index, pos=pos,
                  num_nodes=parent.numel(), **kwargs)
        if validate:
            out.validate()
        return out

    @staticmethod
    def compose(parts: Any) -> 'Hierarchy':
        r"""Puts several hierarchies under one root as a keyed family
        (multi-modal data); see :func:`hsa_graph.compose_hierarchies`."""
        from .convert.compose import compose_hierarchies  # avoids a cycle
        return compose_hierarchies(parts)

    # -- validation --------------------------------------------------------
    def validate(self, raise_on_error: bool = True) -> bool:
        r"""Checks that the data is a valid hierarchy: a non-empty tree (or, for
        a batch, a forest) with one parent per node, no cycle, all indices in
        range, and node attributes with one finite row per node.

        Raises:
            ValueError: describing the first problem found, when
                :obj:`raise_on_error` is :obj:`True`; otherwise returns
                :obj:`False` instead.
        """
        try:
            self._check()
        except ValueError:
            if raise_on_error:
                raise
            return False
        return True

    def _check(self) -> None:
        num_nodes = self.num_nodes
        if num_nodes is None or num_nodes == 0:
            raise ValueError('A hierarchy needs at least one node (got an '
                             'empty tree)')
        edge_index = self.edge_index
        if edge_index is None:
            edge_index = torch.empty(2, 0, dtype=torch.long)
        parent = parent_from_edge_index(edge_index, num_nodes)
        _depth_and_root(parent)
        num_roots = int((parent < 0).sum())
        num_graphs = getattr(self, 'num_graphs', None)
        expected = 1 if num_graphs is None else num_graphs
        if num_roots != expected:
            what = ('a single tree' if num_graphs is None else
                    f'a forest of {num_graphs} trees')
            raise ValueError(f'Expected {what} but found {num_roots} roots '
                             f'(nodes without a parent); batch several trees '
                             f'with Batch.from_data_list')
        for name in ('x', 'pos', 'node_type'):
            value = getattr(self, name, None)
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise ValueError(f"'{name}' must be a tensor")
            if value.dim() == 0:
                raise ValueError(f"'{name}' is a scalar (shape []); give one "
                                 f'row per node: shape [{num_nodes}, ...]')
            if value.size(0) != num_nodes:
                raise ValueError(f"'{name}' has {value.size(0)} rows but the "
                                 f'hierarchy has {num_nodes} nodes; give one '
                                 f'row per node (internal nodes included)')
            if value.is_floating_point() and not bool(
                    torch.isfinite(value).all()):
                raise ValueError(f"'{name}' contains NaN or inf")
        node_type = getattr(self, 'node_type', None)
        if node_type is not None:
            if node_type.dim() != 1:
                raise ValueError(f"'node_type' must have shape [N] = "
                                 f'[{num_nodes}], got {list(node_type.shape)}')
            if node_type.is_floating_point() or node_type.is_complex() or \
                    node_type.dtype == torch.bool:
                raise ValueError(f"'node_type' must hold integer type ids "
                                 f'(0, 1, ...), got {node_type.dtype}')
            if node_type.numel() and int(node_type.min()) < -1:
                bad = int((node_type < -1).nonzero()[0])
                raise ValueError(f"'node_type' must hold type ids >= 0 (or "
                                 f'-1, no type, as on a composed root), got '
                                 f'node_type[{bad}] = {int(node_type[bad])}')

    # -- structure ---------------------------------------------------------
    @property
    def layout(self) -> TreeLayout:
        r"""The :class:`~hsa_graph.layout.TreeLayout` of this hierarchy (or
        forest): the one the loader attached to the batch
        (:class:`hsa_graph.loader.DataLoader`), else a cached one built on
        the device of :obj:`edge_index`."""
        stored = self._store.get('layout', None)
        if stored is not None:
            return stored
        edge_index = self.edge_index
        if edge_index is None:
            edge_index = torch.empty(2, 0, dtype=torch.long)
            self.edge_index = edge_index
        return tree_layout(edge_index, self.num_nodes)

    @layout.setter
    def layout(self, value: TreeLayout) -> None:
        self._store['layout'] = value

    @property
    def parent(self) -> Tensor:
        r"""``[N]`` parent of every node, ``-1`` for roots."""
        return self.layout.parent

    @property
    def depth(self) -> Tensor:
        r"""``[N]`` depth of every node (roots have depth 0)."""
        return self.layout.depth

    @property
    def height(self) -> int:
        r"""Largest depth of any node."""
        return self.layout.num_levels - 1

    @property
    def is_leaf(self) -> Tensor:
        r"""``[N]`` bool: nodes without children."""
        return self.layout.is_leaf

    @property
    def leaf_index(self) -> Tensor:
        r"""Ids of the leaves, ascending."""
        return self.is_leaf.nonzero().flatten()

    @property
    def num_leaves(self) -> int:
        r"""Number of leaves."""
        return int(self.is_leaf.sum())

    @property
    def leaf_count(self) -> Tensor:
        r"""``[N]`` number of leaves below every node (1 for a leaf): the
        spec's :math:`n(A)`."""
        return self.layout.leaf_count.long()

    @property
    def child_count(self) -> Tensor:
        r"""``[N]`` number of children of every node."""
        return torch.bincount(self.edge_index[1], minlength=self.num_nodes)

    @property
    def root_index(self) -> Tensor:
        r"""Ids of the roots (one per tree)."""
        return (self.parent < 0).nonzero().flatten()
