r"""The HSA transformer encoder: the paper's HTE layer, stacked."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import hsa_attention
from ..layout import TreeLayout, attention_dtype, tree_layout
from .positional import FamilyPositionEncoder, FamilySpec

__all__ = ['HSAEncoderLayer', 'HSAEncoder']


def _check_node_type(node_type: Optional[Tensor], num_node_types: int,
                     num_nodes: int) -> None:
    r"""Checks :obj:`node_type`'s presence, shape and, in eager mode, values;
    the values' range waits on the device (two syncs on CUDA), so
    :class:`HSAEncoder` checks once per forward, not once per layer."""
    if node_type is None:
        if num_node_types > 1:
            raise ValueError(f'node_type is required with {num_node_types} '
                             f'node types')
        return
    if node_type.shape != (num_nodes, ):
        raise ValueError(f'node_type must be [N] = [{num_nodes}], got '
                         f'{list(node_type.shape)}')
    if not torch.compiler.is_compiling() and node_type.numel() > 0:
        low, high = int(node_type.min()), int(node_type.max())
        if low < 0 or high >= num_node_types:
            raise ValueError(f'node_type holds values in [{low}, {high}] but '
                             f'the layer has {num_node_types} node types')


def _node_type_rows(node_type: Optional[Tensor],
                    num_node_types: int) -> Optional[List[Tensor]]:
    r"""The rows of every node type, ``(node_type == t).nonzero()`` for each
    type :math:`t`, for the eager per-type projection; :obj:`None` where it
    is not used (one type, no :obj:`node_type`, or under torch.compile)."""
    if (num_node_types == 1 or node_type is None
            or torch.compiler.is_compiling()):
        return None
    # nonzero() waits for the device (the number of rows is data), so a stack
    # of layers computes it once and shares it.
    return [(node_type == type_id).nonzero().flatten()
            for type_id in range(num_node_types)]


class HSAEncoderLayer(nn.Module):
    r"""One Hierarchical Transformer Encoder (HTE) layer from the
    `"Hierarchical Self-Attention: Generalizing Neural Attention Mechanics to
    Multi-Scale Problems" <https://arxiv.org/abs/2509.15448>`_ paper
    (NeurIPS 2025):

    .. math::
        q, k, v &= \mathrm{LN}(W_Q^{(t)} x),\ \mathrm{LN}(W_K^{(t)} x),\
                   W_V^{(t)} x \quad \text{(per node type } t\text{)} \\
        h &= \mathrm{LN}\big(x + W_O\, \Vert_{h=1}^{H}
             \mathrm{HSA}_h(q, k, v, \epsilon_h)\big) \\
        x' &= \mathrm{LN}\big(h + \mathrm{FFN}(h)\big)

    where :math:`\mathrm{HSA}_h` is :func:`~hsa_graph.hsa_attention` on the
    hierarchy and :math:`\epsilon_h = W_P^{(h)} p` projects the shared
    position embedding :math:`p` (from a
    :class:`~hsa_graph.nn.FamilyPositionEncoder`) for this layer and head.
    On a one-level tree with :obj:`include_self=True` it is exactly a
    post-norm transformer layer with softmax attention.

    Attention reads only leaf rows; internal rows of the output hold the
    layer applied to the mean of their leaves' attention outputs and are
    otherwise unused.

    Args:
        channels (int): model width :math:`C` (divisible by :obj:`heads`).
        heads (int): number of attention heads. (default: :obj:`4`)
        ffn_channels (int, optional): hidden width of the feed-forward block
            (default: :obj:`4 * channels`).
        dropout (float): dropout on the attention and FFN outputs.
            (default: :obj:`0.1`)
        num_node_types (int): leaf types (modalities), each with its own
            Q/K/V projection. (default: :obj:`1`)
        pos_channels (int, optional): size of the shared position embedding;
            :obj:`None` disables positions. (default: :obj:`None`)
        pos_head_channels (int): size of each head's projected position
            :math:`\epsilon_h`. (default: :obj:`8`)
        include_self (bool): let leaves attend to themselves, as softmax
            attention does. (default: :obj:`True`)

    Shapes:
        - **input:** x ``[N, C]``, edge_index ``[2, E]``, pos_embedding
          ``[N, pos_channels]``, node_type ``[N]``
        - **output:** ``[N, C]``
    """

    def __init__(self, channels: int, heads: int = 4,
                 ffn_channels: Optional[int] = None, dropout: float = 0.1,
                 num_node_types: int = 1, pos_channels: Optional[int] = None,
                 pos_head_channels: int = 8, include_self: bool = True):
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f'channels ({channels}) must be divisible by '
                             f'heads ({heads})')
        if num_node_types < 1:
            raise ValueError(f'num_node_types must be >= 1, got '
                             f'{num_node_types}')
        self.channels = channels
        self.heads = heads
        self.head_channels = channels // heads
        self.ffn_channels = ffn_channels or 4 * channels
        self.dropout = dropout
        self.num_node_types = num_node_types
        self.pos_channels = pos_channels
        self.pos_head_channels = pos_head_channels
        self.include_self = include_self

        self.qkv = nn.ModuleList([
            nn.Linear(channels, 3 * channels) for _ in range(num_node_types)
        ])
        self.query_norm = nn.LayerNorm(self.head_channels)
        self.key_norm = nn.LayerNorm(self.head_channels)
        self.pos_proj = None if pos_channels is None else nn.Linear(
            pos_channels, heads * pos_head_channels, bias=False)
        self.out_proj = nn.Linear(channels, channels)
        self.attention_norm = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, self.ffn_channels),
                                 nn.GELU(), nn.Linear(self.ffn_channels, channels))
        self.ffn_norm = nn.LayerNorm(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in self.qkv:
            lin.reset_parameters()
        self.query_norm.reset_parameters()
        self.key_norm.reset_parameters()
        if self.pos_proj is not None:
            self.pos_proj.reset_parameters()
        self.out_proj.reset_parameters()
        self.attention_norm.reset_parameters()
        for module in self.ffn:
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        self.ffn_norm.reset_parameters()

    def project_qkv(self, x: Tensor, node_type: Optional[Tensor] = None,
                    node_rows: Optional[Sequence[Tensor]] = None):
        r"""Per-type projections, split into heads, with LayerNorm on the
        queries and keys. Returns ``(query, key, value)``, each
        ``[N, H, C / H]``. :obj:`node_rows` are the rows of each node type
        (see :meth:`forward`), computed from :obj:`node_type` if not given."""
        if self.num_node_types == 1:
            qkv = self.qkv[0](x)
        elif torch.compiler.is_compiling():
            # Each row keeps its own type's projection with no data-dependent
            # shapes, so the graph compiles without breaks (at the price of
            # projecting every row with every type).
            qkv = x.new_zeros(x.size(0), 3 * self.channels)
            for type_id, lin in enumerate(self.qkv):
                mine = (node_type == type_id).unsqueeze(-1)
                qkv = qkv + torch.where(mine, lin(x), 0.0)
        else:
            # Eager: each type's rows only (T times less work for T types).
            if node_rows is None:
                node_rows = _node_type_rows(node_type, self.num_node_types)
            elif len(node_rows) != self.num_node_types:
                raise ValueError(f'node_rows must hold {self.num_node_types} '
                                 f'index tensors (one per node type), got '
                                 f'{len(node_rows)}')
            qkv = x.new_empty(x.size(0), 3 * self.channels)
            for rows, lin in zip(node_rows, self.qkv):
                qkv = qkv.index_copy(0, rows, lin(x.index_select(0, rows)))
        shape = (x.size(0), self.heads, self.head_channels)
        query, key, value = qkv.split(self.channels, dim=-1)
        query = self.query_norm(query.reshape(shape))              # (N, H, d)
        key = self.key_norm(key.reshape(shape))
        return query, key, value.reshape(shape)

    def forward(self, x: Tensor, edge_index: Optional[Tensor] = None,
                pos_embedding: Optional[Tensor] = None,
                node_type: Optional[Tensor] = None,
                layout: Optional[TreeLayout] = None,
                node_rows: Optional[Sequence[Tensor]] = None, *,
                check_node_type: bool = True) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): ``[N, C]`` node features (leaf rows are read).
            edge_index (torch.Tensor, optional): ``[2, E]`` child -> parent
                edges; may be omitted when :obj:`layout` is given.
            pos_embedding (torch.Tensor, optional): ``[N, pos_channels]``
                shared position embedding of every node.
            node_type (torch.Tensor, optional): ``[N]`` type of every node,
                in ``[0, num_node_types)``.
            layout (TreeLayout, optional): the forest's precomputed layout.
            node_rows (list of torch.Tensor, optional): the rows of each node
                type, ``node_rows[t] = (node_type == t).nonzero().flatten()``,
                precomputed so that a stack of layers waits on the device
                once (:class:`HSAEncoder` passes them); computed from
                :obj:`node_type` here otherwise. Used by the eager per-type
                projection only (ignored with one node type and under
                torch.compile). (default: :obj:`None`)
            check_node_type (bool): check :obj:`node_type` (present when
                there are several node types, ``[N]``, values in
                ``[0, num_node_types)``). Reading the values waits on the
                device, so :class:`HSAEncoder` checks once per forward and
                passes :obj:`False` to its layers; a stack of layers can
                likewise check in its first layer only. Pass :obj:`False`
                only for a :obj:`node_type` already checked for this
                :obj:`x`. (default: :obj:`True`)
        """
        if x.dim() != 2 or x.size(-1) != self.channels:
            raise ValueError(f'x must be [N, {self.channels}], got '
                             f'{list(x.shape)}')
        if layout is None:
            if edge_index is None:
                raise ValueError('Pass either edge_index or layout')
            layout = tree_layout(edge_index, x.size(0), device=x.device,
                                 dtype=attention_dtype(x.dtype))
        if check_node_type:
            _check_node_type(node_type, self.num_node_types, x.size(0))
        if (pos_embedding is None) != (self.pos_proj is None):
            raise ValueError('pos_embedding must be given exactly when the '
                             'layer was built with pos_channels')
        query, key, value = self.project_qkv(x, node_type, node_rows)
        pos = None
        if self.pos_proj is not None:
            pos = self.pos_proj(pos_embedding).view(
                x.size(0), self.heads, self.pos_head_channels)    # (N, H, P)
        attended = hsa_attention(query, key, value, edge_index, pos=pos,
                                 include_self=self.include_self,
                                 num_nodes=x.size(0), layout=layout)
        attended = self.out_proj(attended.reshape(x.size(0), self.channels))
        h = self.attention_norm(
            x + F.dropout(attended, self.dropout, self.training))
        return self.ffn_norm(h + F.dropout(self.ffn(h), self.dropout,
                                           self.training))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'heads={self.heads})')


class HSAEncoder(nn.Module):
    r"""A stack of :class:`HSAEncoderLayer` s over ragged hierarchies, from
    the `"Hierarchical Self-Attention" <https://arxiv.org/abs/2509.15448>`_
    paper: an input projection, one shared
    :class:`~hsa_graph.nn.FamilyPositionEncoder` (each layer projects its
    output to its own heads) and :obj:`num_layers` HTE layers. The tree
    layout, and in eager mode the rows of each node type, are computed once
    per forward and shared by every layer and head; :obj:`node_type` is
    checked once per forward, not by every layer.

    The flat-attention baseline (the paper's FSA) is the same module run on
    :func:`~hsa_graph.convert.flatten_hierarchy` trees: same code, same
    parameters, and with :obj:`include_self=True` exactly softmax attention.

    Args:
        in_channels (int): input feature size.
        channels (int): model width.
        num_layers (int): number of layers. (default: :obj:`1`)
        heads (int): attention heads per layer. (default: :obj:`4`)
        ffn_channels (int, optional): FFN width (default: ``4 * channels``).
        dropout (float): dropout. (default: :obj:`0.1`)
        num_node_types (int): leaf types with their own Q/K/V projections.
            (default: :obj:`1`)
        families (list, optional): one position spec per family type (see
            :class:`~hsa_graph.nn.FamilyPositionEncoder`); :obj:`None`
            disables positions. (default: ``[1]``)
        pos_channels (int): size of the shared position embedding.
            (default: :obj:`32`)
        pos_head_channels (int): per-head projected position size.
            (default: :obj:`8`)
        include_self (bool): leaves attend to themselves.
            (default: :obj:`True`)
        max_period (float): longest Fourier period of the position encoders.
            (default: :obj:`4096.0`)

    Shapes:
        - **input:** x ``[N, in_channels]``, edge_index ``[2, E]``, pos
          ``[N, P]``, family_type ``[N]``, node_type ``[N]``
        - **output:** ``[N, channels]``
    """

    def __init__(self, in_channels: int, channels: int, num_layers: int = 1,
                 heads: int = 4, ffn_channels: Optional[int] = None,
                 dropout: float = 0.1, num_node_types: int = 1,
                 families: Optional[Sequence[FamilySpec]] = (1, ),
                 pos_channels: int = 32, pos_head_channels: int = 8,
                 include_self: bool = True, max_period: float = 4096.0):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        self.in_channels = in_channels
        self.channels = channels
        self.num_layers = num_layers
        self.input_proj = (nn.Identity() if in_channels == channels else
                           nn.Linear(in_channels, channels))
        self.pos_encoder = None if families is None else \
            FamilyPositionEncoder(pos_channels, families,
                                  max_period=max_period)
        self.layers = nn.ModuleList([
            HSAEncoderLayer(channels, heads, ffn_channels, dropout,
                            num_node_types,
                            None if families is None else pos_channels,
                            pos_head_channels, include_self)
            for _ in range(num_layers)
        ])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if isinstance(self.input_proj, nn.Linear):
            self.input_proj.reset_parameters()
        if self.pos_encoder is not None:
            self.pos_encoder.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor,
                pos: Optional[Tensor] = None,
                family_type: Optional[Tensor] = None,
                node_type: Optional[Tensor] = None,
                layout: Optional[TreeLayout] = None) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): ``[N, in_channels]`` node features.
            edge_index (torch.Tensor): ``[2, E]`` child -> parent edges.
            pos (torch.Tensor, optional): ``[N, P]`` positions within the
                parent; required when the encoder has position families.
            family_type (torch.Tensor, optional): ``[N]`` family type of
                every node (``-1``: no position); optional with one family
                type.
            node_type (torch.Tensor, optional): ``[N]`` node types.
            layout (TreeLayout, optional): precomputed layout (computed once
                here otherwise).
        """
        if x.dim() != 2 or x.size(-1) != self.in_channels:
            raise ValueError(f'x must be [N, {self.in_channels}], got '
                             f'{list(x.shape)}')
        if layout is None:
            layout = tree_layout(edge_index, x.size(0), device=x.device,
                                 dtype=attention_dtype(x.dtype))
        pos_embedding = None
        if self.pos_encoder is not None:
            if pos is None:
                raise ValueError('This encoder embeds positions: pass pos '
                                 '(or build it with families=None)')
            pos_embedding = self.pos_encoder(pos.to(x.dtype), family_type)
        x = self.input_proj(x)
        # node_type is the same for every layer: check it once (reading its
        # values waits on the device), before its rows are found, and let
        # the layers skip the check.
        num_node_types = self.layers[0].num_node_types
        _check_node_type(node_type, num_node_types, x.size(0))
        node_rows = _node_type_rows(node_type, num_node_types)
        for layer in self.layers:
            x = layer(x, edge_index, pos_embedding, node_type, layout,
                      node_rows=node_rows, check_node_type=False)
        return x

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.channels}, num_layers={self.num_layers})')
