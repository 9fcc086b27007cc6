r"""`DataLoader`: PyG's loader, plus the batch's tree layout built in the
workers, so that a training step's main process does no structure work."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
import torch_geometric.loader
from torch_geometric.data import Batch

from .layout import SIZE_CLASSES, tree_layout

__all__ = ['DataLoader', 'LayoutCollater']


class LayoutCollater:
    r"""Wraps a PyG collate function: collates the samples into a forest and
    attaches its :class:`~hsa_graph.TreeLayout` as ``batch.layout``. Graphs
    that carry a tree over their nodes (``data.hierarchy``, from
    :class:`~hsa_graph.transforms.AddHierarchy`) are batched as usual and
    their trees into a forest ``batch.hierarchy`` with its layout. It runs
    wherever the collate runs: in the loader's worker processes when
    ``num_workers > 0``.

    Args:
        collate (callable): PyG's collater (``list of Data -> Batch``).
        edge_index (str): the batch attribute holding the child -> parent
            edges. (default: :obj:`"edge_index"`)
        layout_dtype (torch.dtype): the dtype of the layout's float tensors,
            the dtype the attention computes in (float32 for half-precision
            training). (default: :obj:`torch.float32`)
        size_classes (int): family size classes per level (see
            :func:`~hsa_graph.tree_layout`). (default: :obj:`2`)
    """
    def __init__(self, collate, edge_index: str = 'edge_index',
                 layout_dtype: torch.dtype = torch.float32,
                 size_classes: int = SIZE_CLASSES):
        self.collate = collate
        self.edge_index = edge_index
        self.options = dict(dtype=layout_dtype, size_classes=size_classes,
                            cache=False)

    def __call__(self, data_list: List[Any]) -> Batch:
        batch = self.collate(data_list)
        trees = batch.get('hierarchy', None)
        if isinstance(trees, list):       # graphs, each with a tree beside
            forest = Batch.from_data_list(trees)
            forest.layout = tree_layout(forest.edge_index, forest.num_nodes,
                                        **self.options)
            batch.hierarchy = forest
        else:
            try:
                batch.layout = tree_layout(getattr(batch, self.edge_index),
                                           batch.num_nodes, **self.options)
            except ValueError as error:
                raise ValueError(
                    f'hsa_graph.loader.DataLoader batches hierarchies: '
                    f'batch.{self.edge_index} must be child -> parent tree '
                    f'edges ({error}). For graphs use torch_geometric.loader.'
                    f'DataLoader, or AddHierarchy for a tree beside each '
                    f'graph.') from error
        return batch


class DataLoader(torch_geometric.loader.DataLoader):
    r"""A drop-in for :class:`torch_geometric.loader.DataLoader` over
    hierarchies: each batch is the usual PyG forest and carries its
    :class:`~hsa_graph.TreeLayout` as ``batch.layout``, built by the
    collate function (in the workers with ``num_workers > 0``) and moved by
    ``batch.to(device, non_blocking=True)`` with the rest of the batch.
    Pass it to the layers: ``conv(batch.x, batch.edge_index,
    layout=batch.layout)``.

    Args:
        dataset (Dataset): the hierarchies.
        batch_size (int, optional): samples per batch. (default: :obj:`1`)
        shuffle (bool, optional): reshuffle every epoch.
            (default: :obj:`False`)
        follow_batch (List[str], optional): as in PyG.
        exclude_keys (List[str], optional): as in PyG.
        layout_dtype (torch.dtype): the dtype of the layouts' float tensors:
            the dtype the model computes attention in (float32 also for
            half-precision training; float64 for float64 models).
            (default: :obj:`torch.float32`)
        size_classes (int): family size classes per level (see
            :func:`~hsa_graph.tree_layout`): ``1`` for ``torch.compile``
            over ragged batches (one graph per tree height), the default 2
            for less padding. (default: :obj:`2`)
        **kwargs (optional): further arguments of
            :class:`torch.utils.data.DataLoader` (``num_workers``,
            ``pin_memory``, ``persistent_workers``, ...).
    """
    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 follow_batch: Optional[Sequence[str]] = None,
                 exclude_keys: Optional[Sequence[str]] = None,
                 layout_dtype: torch.dtype = torch.float32,
                 size_classes: int = SIZE_CLASSES, **kwargs):
        if 'collate_fn' in kwargs:
            raise TypeError('DataLoader builds its own collate_fn; use '
                            'torch_geometric.loader.DataLoader for another')
        super().__init__(dataset, batch_size, shuffle, follow_batch,
                         exclude_keys, **kwargs)
        self.collate_fn = LayoutCollater(self.collate_fn,
                                         layout_dtype=layout_dtype,
                                         size_classes=size_classes)
