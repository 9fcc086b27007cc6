r"""PyG transforms around the converters, for ``T.Compose`` and datasets'
``pre_transform``.

Each transform reads its input from a :class:`~torch_geometric.data.Data`,
returns a :class:`~hsa_graph.Hierarchy`, and carries over the graph-level
attributes named in :obj:`keep` (the label ``y`` by default).

Example::

    >>> import torch_geometric.transforms as T
    >>> from torch_geometric.datasets import ModelNet
    >>> dataset = ModelNet(root, pre_transform=T.Compose([  # doctest: +SKIP
    ...     T.SamplePoints(1024), PointCloudToHierarchy(leaf_size=16)]))
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .convert import (from_image, from_mesh, from_point_cloud,
                      hierarchy_from_graph)
from .convert.document import DocumentToHierarchy  # re-exported: one place
from .hierarchy import Hierarchy

__all__ = ['PointCloudToHierarchy', 'GraphToHierarchy', 'MeshToHierarchy',
           'ImageToHierarchy', 'DocumentToHierarchy', 'AddHierarchy']


class _ToHierarchy(BaseTransform):
    def __init__(self, keep: Sequence[str] = ('y', ), **options: Any):
        self.keep = tuple(keep)
        self.options = options

    def _carry(self, data: Data, out: Hierarchy) -> Hierarchy:
        for name in self.keep:
            if name in data:
                out[name] = data[name]
        return out

    def _require(self, data: Data, name: str) -> Any:
        value = getattr(data, name, None)
        if value is None:
            raise ValueError(f'{type(self).__name__} needs data.{name}')
        return value

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in self.options.items())
        return f'{type(self).__name__}({args})'


class PointCloudToHierarchy(_ToHierarchy):
    r"""Converts ``data.pos`` (and ``data.x`` when present) into a hierarchy
    with :func:`~hsa_graph.from_point_cloud`.

    Args:
        method (str): ``'octree'`` or ``'kdtree'``. (default: ``'octree'``)
        leaf_size (int): most points per cell. (default: :obj:`16`)
        branching (int): kd-tree parts per split. (default: :obj:`2`)
        keep (list of str): graph-level attributes carried over.
            (default: ``('y',)``)
    """

    def __init__(self, method: str = 'octree', leaf_size: int = 16,
                 branching: int = 2, keep: Sequence[str] = ('y', )):
        super().__init__(keep, method=method, leaf_size=leaf_size,
                         branching=branching)

    def forward(self, data: Data) -> Hierarchy:
        out = from_point_cloud(self._require(data, 'pos'),
                               x=getattr(data, 'x', None), **self.options)
        return self._carry(data, out)


class GraphToHierarchy(_ToHierarchy):
    r"""Clusters a PyG graph (``edge_index``, optional ``edge_weight``, ``x``,
    ``pos``) into a hierarchy with :func:`~hsa_graph.hierarchy_from_graph`.

    Args:
        branching (int): most children of a node holding communities.
            (default: :obj:`8`)
        leaf_size (int, optional): most leaves per family of leaves.
        method (str): ``'louvain'`` or ``'spectral'``.
            (default: ``'louvain'``)
        seed (int): random seed. (default: :obj:`0`)
        keep (list of str): graph-level attributes carried over.
            (default: ``('y',)``)
    """

    def __init__(self, branching: int = 8, leaf_size: Optional[int] = None,
                 method: str = 'louvain', seed: int = 0,
                 keep: Sequence[str] = ('y', )):
        super().__init__(keep, branching=branching, leaf_size=leaf_size,
                         method=method, seed=seed)

    def forward(self, data: Data) -> Hierarchy:
        return self._carry(data, hierarchy_from_graph(data, **self.options))


class MeshToHierarchy(_ToHierarchy):
    r"""Converts a mesh (``data.pos``, ``data.face`` ``[3, F]``, optional
    ``data.x``) into a hierarchy with :func:`~hsa_graph.from_mesh`.

    Args:
        leaves (str): ``'vertex'`` or ``'face'``. (default: ``'vertex'``)
        branching (int): most children of a node holding clusters.
            (default: :obj:`8`)
        leaf_size (int, optional): most leaves per family of leaves.
        method (str): ``'louvain'`` or ``'spectral'``.
            (default: ``'louvain'``)
        seed (int): random seed. (default: :obj:`0`)
        keep (list of str): graph-level attributes carried over.
            (default: ``('y',)``)
    """

    def __init__(self, leaves: str = 'vertex', branching: int = 8,
                 leaf_size: Optional[int] = None, method: str = 'louvain',
                 seed: int = 0, keep: Sequence[str] = ('y', )):
        super().__init__(keep, leaves=leaves, branching=branching,
                         leaf_size=leaf_size, method=method, seed=seed)

    def forward(self, data: Data) -> Hierarchy:
        out = from_mesh(self._require(data, 'pos'), self._require(data, 'face'),
                        x=getattr(data, 'x', None), **self.options)
        return self._carry(data, out)


class ImageToHierarchy(_ToHierarchy):
    r"""Converts an image stored in ``data[image_attr]`` (``[C, H, W]`` or
    ``[H, W]``) into a quad-tree of patches with :func:`~hsa_graph.from_image`.

    Args:
        patch_size (int): patch side in pixels. (default: :obj:`4`)
        pad (bool): zero-pad to a multiple of the patch size.
            (default: :obj:`False`)
        channels_last (bool, optional): the image is ``[H, W, C]``
            (:obj:`True`) or ``[C, H, W]`` (:obj:`False`); :obj:`None`
            expects ``[C, H, W]`` and rejects images that look channels-last,
            see :func:`~hsa_graph.from_image`. (default: :obj:`None`)
        image_attr (str): where the image is. (default: ``'image'``)
        keep (list of str): graph-level attributes carried over.
            (default: ``('y',)``)
    """

    def __init__(self, patch_size: int = 4, pad: bool = False,
                 image_attr: str = 'image', keep: Sequence[str] = ('y', ),
                 channels_last: Optional[bool] = None):
        super().__init__(keep, patch_size=patch_size, pad=pad,
                         channels_last=channels_last)
        self.image_attr = image_attr

    def forward(self, data: Data) -> Hierarchy:
        out = from_image(self._require(data, self.image_attr), **self.options)
        return self._carry(data, out)


class AddHierarchy(_ToHierarchy):
    r"""Adds a tree over a graph's nodes, for HSA as a graph transformer's
    global attention (:class:`~hsa_graph.nn.HSAGlobalAttention`,
    :class:`~hsa_graph.nn.HSAGPSConv`): the graph is left as it is, and
    ``data.hierarchy`` holds a :class:`~hsa_graph.Hierarchy` of its
    communities (:func:`~hsa_graph.hierarchy_from_graph`) whose leaves are
    the graph's nodes, with ``hierarchy.node_index[i]`` the tree node of
    graph node ``i``. :class:`hsa_graph.loader.DataLoader` batches the
    trees into a forest beside the graphs (graphs never attend to each
    other) and builds its layout.

    Args:
        branching (int): most children of a node holding communities.
            (default: :obj:`8`)
        leaf_size (int, optional): most leaves per family of leaves.
        method (str): ``'louvain'`` or ``'spectral'``.
            (default: ``'louvain'``)
        seed (int): random seed. (default: :obj:`0`)
    """

    def __init__(self, branching: int = 8, leaf_size: Optional[int] = None,
                 method: str = 'louvain', seed: int = 0):
        super().__init__((), branching=branching, leaf_size=leaf_size,
                         method=method, seed=seed)

    def forward(self, data: Data) -> Data:
        if data.num_nodes is None or data.num_nodes < 1:
            raise ValueError('AddHierarchy needs a graph with at least one '
                             'node')
        tree = hierarchy_from_graph(Data(edge_index=data.edge_index,
                                         edge_weight=data.get('edge_weight'),
                                         num_nodes=data.num_nodes),
                                    x=None, pos=None, **self.options)
        # hierarchy_from_graph makes graph node i the tree's leaf i.
        data.hierarchy = Hierarchy(edge_index=tree.edge_index,
                                   num_nodes=tree.num_nodes,
                                   node_index=torch.arange(data.num_nodes))
        return data
