r"""HSA as the global attention of a graph transformer: `HSAGlobalAttention`
and `HSAGPSConv` (a drop-in for PyG's `GPSConv`)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Dropout, LayerNorm, Linear, Module, Sequential
from torch_geometric.data import Batch, Data
from torch_geometric.nn.resolver import (activation_resolver,
                                         normalization_resolver)

from ..functional.attention import hsa_attention
from ..layout import attention_dtype, tree_layout

__all__ = ['HSAGlobalAttention', 'HSAGPSConv']


def _forest(hierarchy: Union[Data, List[Data]]) -> Data:
    if isinstance(hierarchy, (list, tuple)):     # PyG's own loader: a list
        hierarchy = Batch.from_data_list(list(hierarchy))
    if not isinstance(hierarchy, Data) or \
            getattr(hierarchy, 'node_index', None) is None:
        raise TypeError('hierarchy must be the tree AddHierarchy adds '
                        '(data.hierarchy, or batch.hierarchy from '
                        'hsa_graph.loader.DataLoader)')
    return hierarchy


class HSAGlobalAttention(Module):
    r"""Hierarchical self-attention (`"Hierarchical Self-Attention:
    Generalizing Neural Attention Mechanics to Multi-Scale Problems"
    <https://arxiv.org/abs/2509.15448>`_) over all nodes of each graph,
    through a tree of the graph's communities
    (:class:`~hsa_graph.transforms.AddHierarchy`): the graph's nodes are
    the tree's leaves, and two nodes interact at the community where their
    branches split, exactly, in :math:`O(N b)` per head for branching
    :math:`b`:

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_o \,\big\Vert_{h=1}^{H}
        \sum_{j} \theta^{(h)}_{ij} \mathbf{W}^{(h)}_v \mathbf{x}_j,
        \qquad \theta^{(h)} = \mathrm{HSA}\big(\mathrm{LN}(\mathbf{W}^{(h)}_q
        \mathbf{x}), \mathrm{LN}(\mathbf{W}^{(h)}_k \mathbf{x});
        \mathcal{T}\big)

    with :math:`j` over the nodes of :math:`i`'s graph (graphs in a batch
    never attend to each other). Internal tree nodes carry the means of
    their leaves' queries, keys and values, as HSA defines them.

    Args:
        channels (int): size of each node's input and output.
        heads (int, optional): attention heads (:obj:`channels` must be a
            multiple). (default: :obj:`1`)
        dropout (float, optional): dropout on the attention output.
            (default: :obj:`0.`)
        include_self (bool, optional): nodes attend to themselves (a
            one-level tree is then exactly softmax attention, like
            :class:`torch.nn.MultiheadAttention`). (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, the
          hierarchy over the :math:`|\mathcal{V}|` nodes
        - **output:** :math:`(|\mathcal{V}|, C)`
    """

    def __init__(self, channels: int, heads: int = 1, dropout: float = 0.,
                 include_self: bool = True):
        super().__init__()
        if heads < 1 or channels < 1 or channels % heads:
            raise ValueError(f'channels ({channels}) must be a positive '
                             f'multiple of heads ({heads})')
        self.channels, self.heads = channels, heads
        self.dropout, self.include_self = dropout, include_self
        self.lin_qkv = Linear(channels, 3 * channels)
        self.norm_query = LayerNorm(channels // heads)
        self.norm_key = LayerNorm(channels // heads)
        self.lin_out = Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self):
        r"""Resets all learnable parameters."""
        for module in (self.lin_qkv, self.norm_query, self.norm_key,
                       self.lin_out):
            module.reset_parameters()

    def forward(self, x: Tensor, hierarchy: Union[Data, List[Data]]
                ) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): ``[N, channels]`` node features.
            hierarchy (Hierarchy): the tree over the nodes
                (``batch.hierarchy``); a list of per-graph trees is batched
                here (PyG's own loader).
        """
        tree = _forest(hierarchy)
        node_index = tree.node_index
        if x.dim() != 2 or x.size(1) != self.channels:
            raise ValueError(f'x must be [N, {self.channels}], got '
                             f'{list(x.shape)}')
        if node_index.numel() != x.size(0):
            raise ValueError(f'x has {x.size(0)} rows but the hierarchy '
                             f'covers {node_index.numel()} graph nodes (a '
                             f'hierarchy from another batch?)')
        heads, channels = self.heads, self.channels // self.heads
        q, k, v = self.lin_qkv(x).view(-1, 3, heads, channels).unbind(1)
        q, k = self.norm_query(q), self.norm_key(k)
        # The tree's internal rows are never read: zeros stand there.
        rows = q.new_zeros(tree.num_nodes, 3, heads, channels).index_copy(
            0, node_index, torch.stack([q, k, v], 1))
        layout, dtype = tree.layout, attention_dtype(x.dtype)
        if layout.dtype != dtype or layout.device != x.device:
            # One stored in the dtype the attention computes in (cached per
            # edge_index, so built once): forward then casts nothing.
            layout = tree_layout(tree.edge_index, tree.num_nodes,
                                 device=x.device, dtype=dtype)
        out = hsa_attention(*rows.unbind(1), layout=layout,
                            include_self=self.include_self)
        out = out.index_select(0, node_index).reshape(-1, self.channels)
        out = F.dropout(out, p=self.dropout, training=self.training)
        return self.lin_out(out)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'heads={self.heads})')


class HSAGPSConv(Module):
    r"""The GPS layer of `"Recipe for a General, Powerful, Scalable Graph
    Transformer" <https://arxiv.org/abs/2205.12454>`_ (PyG's
    :class:`~torch_geometric.nn.conv.GPSConv`), with
    :class:`HSAGlobalAttention` as its global attention:

    .. math::
        \mathbf{h} = \mathrm{N}_1\big(\mathbf{x} + \mathrm{MPNN}(\mathbf{x},
        \mathbf{A})\big) + \mathrm{N}_2\big(\mathbf{x} +
        \mathrm{HSA}(\mathbf{x}; \mathcal{T})\big), \qquad
        \mathbf{x}^{\prime} = \mathrm{N}_3\big(\mathbf{h} +
        \mathrm{MLP}(\mathbf{h})\big)

    Args:
        channels (int): size of each node's input and output.
        conv (MessagePassing, optional): the local message-passing layer
            (:obj:`None`: global attention only).
        heads (int, optional): attention heads. (default: :obj:`1`)
        dropout (float, optional): dropout after the local and global
            parts and in the MLP. (default: :obj:`0.`)
        act (str, optional): the MLP's activation. (default: :obj:`"relu"`)
        act_kwargs (Dict[str, Any], optional): its arguments.
        norm (str, optional): the normalisation (PyG's resolver names).
            (default: :obj:`"batch_norm"`)
        norm_kwargs (Dict[str, Any], optional): its arguments.
        include_self (bool, optional): nodes attend to themselves.
            (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge indices
          :math:`(2, |\mathcal{E}|)`, the hierarchy over the nodes, batch
          vector :math:`(|\mathcal{V}|)` *(optional)*
        - **output:** :math:`(|\mathcal{V}|, C)`
    """

    def __init__(self, channels: int, conv: Optional[Module] = None,
                 heads: int = 1, dropout: float = 0., act: str = 'relu',
                 act_kwargs: Optional[Dict[str, Any]] = None,
                 norm: Optional[str] = 'batch_norm',
                 norm_kwargs: Optional[Dict[str, Any]] = None,
                 include_self: bool = True):
        super().__init__()
        self.channels, self.conv, self.heads = channels, conv, heads
        self.dropout = dropout
        self.attn = HSAGlobalAttention(channels, heads, dropout=0.,
                                       include_self=include_self)
        self.mlp = Sequential(
            Linear(channels, 2 * channels),
            activation_resolver(act, **(act_kwargs or {})),
            Dropout(dropout), Linear(2 * channels, channels),
            Dropout(dropout))
        norm_kwargs = norm_kwargs or {}
        self.norm1, self.norm2, self.norm3 = (
            normalization_resolver(norm, channels, **norm_kwargs)
            for _ in range(3))
        self.norm_with_batch = getattr(self.norm1, 'forward', None) is not \
            None and 'batch' in self.norm1.forward.__code__.co_varnames
        self.reset_parameters()

    def reset_parameters(self):
        r"""Resets all learnable parameters."""
        if self.conv is not None:
            self.conv.reset_parameters()
        self.attn.reset_parameters()
        for module in self.mlp:
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        for norm in (self.norm1, self.norm2, self.norm3):
            if norm is not None:
                norm.reset_parameters()

    def _norm(self, norm, x: Tensor, batch: Optional[Tensor]) -> Tensor:
        if norm is None:
            return x
        return norm(x, batch=batch) if self.norm_with_batch else norm(x)

    def forward(self, x: Tensor, edge_index: Tensor,
                hierarchy: Union[Data, List[Data]],
                batch: Optional[Tensor] = None, **kwargs) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): ``[N, channels]`` node features.
            edge_index (torch.Tensor): ``[2, E]`` the graph's edges (for
                :obj:`conv`).
            hierarchy (Hierarchy): the tree over the nodes
                (``batch.hierarchy``).
            batch (torch.Tensor, optional): ``[N]`` graph of each node (for
                the normalisation).
            **kwargs (optional): further arguments of :obj:`conv`
                (``edge_attr=...``).
        """
        out = 0
        if self.conv is not None:
            local = self.conv(x, edge_index, **kwargs)
            local = F.dropout(local, p=self.dropout, training=self.training)
            out = self._norm(self.norm1, local + x, batch)
        glob = self.attn(x, hierarchy)
        glob = F.dropout(glob, p=self.dropout, training=self.training)
        out = out + self._norm(self.norm2, glob + x, batch)
        return self._norm(self.norm3, out + self.mlp(out), batch)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'conv={self.conv}, heads={self.heads})')
