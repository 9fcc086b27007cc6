r"""`HSAConv`: a PyG layer running hierarchical self-attention over a tree."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import LayerNorm
from torch_geometric.nn.dense.linear import Linear

from ..functional.attention import hsa_attention
from ..functional.dense import hsa_attention_matrix
from ..layout import TreeLayout, attention_dtype, tree_layout

__all__ = ['HSAConv', 'AttentionWeights']


@dataclass
class AttentionWeights:
    r"""The attention of one :class:`HSAConv` call in compact form: the
    per-head normalised queries and keys (and position embeddings) that,
    with the tree, determine :math:`\theta` exactly, in O(N) memory.
    :meth:`dense` expands it to the ``[H, N, N]`` matrix, for small trees
    and pictures (:func:`hsa_graph.plot.plot_attention`).

    Attributes:
        query (Tensor): ``[N, H, C]`` normalised queries.
        key (Tensor): ``[N, H, C]`` normalised keys.
        pos (Tensor, optional): ``[N, H, C]`` position embeddings.
        edge_index (Tensor): ``[2, E]`` child -> parent edges.
        include_self (bool): whether leaves attend to themselves.
    """
    query: Tensor
    key: Tensor
    pos: Optional[Tensor]
    edge_index: Tensor
    include_self: bool

    def dense(self) -> Tensor:
        r"""The ``[H, N, N]`` attention matrix :math:`\theta` (O(N^2))."""
        return hsa_attention_matrix(self.query, self.key, self.edge_index,
                                    pos=self.pos,
                                    include_self=self.include_self)


class HSAConv(torch.nn.Module):
    r"""The hierarchical self-attention operator from the `"Hierarchical
    Self-Attention: Generalizing Neural Attention Mechanics to Multi-Scale
    Problems" <https://arxiv.org/abs/2509.15448>`_ paper (NeurIPS 2025).

    The graph is a forest given by child -> parent :obj:`edge_index`; its
    leaves attend to each other through the tree:

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_1 \mathbf{x}_i +
        \sum_{j \in \mathcal{L}} \theta_{i,j} \mathbf{W}_2 \mathbf{x}_j,
        \qquad
        \theta = \mathrm{HSA}\big(\mathrm{LN}(\mathbf{W}_3 \mathbf{x}),
        \mathrm{LN}(\mathbf{W}_4 \mathbf{x}); \mathcal{T}\big),

    where :math:`\mathcal{L}` are the leaves of :math:`i`'s tree and
    :math:`\theta` is the exact HSA attention matrix (see
    :func:`~hsa_graph.hsa_attention`): a leaf attends to its siblings
    individually and to whole sibling subtrees through their mean query and
    key. Queries and keys are layer-normalised per head, as the paper's
    derivation assumes. Internal nodes' outputs are the mean over their
    leaves (plus their own skip term).

    Args:
        in_channels (int): size of each input sample, or :obj:`-1` to infer
            it lazily.
        out_channels (int): size of each output sample per head.
        heads (int, optional): number of attention heads. (default: :obj:`1`)
        concat (bool, optional): concatenate the heads' outputs; if
            :obj:`False` they are averaged. (default: :obj:`True`)
        dropout (float, optional): dropout probability on the attention
            output (HSA never materialises :math:`\theta`, so the weights
            themselves are not dropped). (default: :obj:`0.`)
        include_self (bool, optional): leaves also attend to themselves; a
            one-level tree then gives exactly softmax attention.
            (default: :obj:`False`)
        bias (bool, optional): learn additive biases. (default: :obj:`True`)
        root_weight (bool, optional): add the skip term
            :math:`\mathbf{W}_1 \mathbf{x}_i`. (default: :obj:`True`)
        pos_channels (int, optional): size of the raw sibling positions
            :obj:`pos` given to :meth:`forward` (then required); they are
            projected to one position embedding per head, whose dot
            products bias sibling logits. Without it, :meth:`forward` takes
            no :obj:`pos`. (default: :obj:`None`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge
          indices :math:`(2, |\mathcal{E}|)` (child -> parent), positions
          :math:`(|\mathcal{V}|, P)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, H * F_{out})` or
          :math:`(|\mathcal{V}|, F_{out})` if :obj:`concat=False`; with
          :obj:`return_attention_weights`, also an
          :class:`AttentionWeights` (``.dense()`` gives
          :math:`(H, |\mathcal{V}|, |\mathcal{V}|)`).
    """
    def __init__(self, in_channels: int, out_channels: int, heads: int = 1,
                 concat: bool = True, dropout: float = 0.,
                 include_self: bool = False, bias: bool = True,
                 root_weight: bool = True, pos_channels: Optional[int] = None):
        super().__init__()
        for name, value in (('out_channels', out_channels), ('heads', heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got '
                                 f'{value!r}')
        if not isinstance(in_channels, int) or in_channels == 0 or \
                in_channels < -1:
            raise ValueError(f'in_channels must be a positive integer or -1 '
                             f'(lazy), got {in_channels!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.dropout = dropout
        self.include_self = include_self
        self.root_weight = root_weight
        self.pos_channels = pos_channels

        self.lin_query = Linear(in_channels, heads * out_channels, bias=bias)
        self.lin_key = Linear(in_channels, heads * out_channels, bias=bias)
        self.lin_value = Linear(in_channels, heads * out_channels, bias=bias)
        self.norm_query = LayerNorm(out_channels)
        self.norm_key = LayerNorm(out_channels)
        if pos_channels is not None:
            self.lin_pos = Linear(pos_channels, heads * out_channels,
                                  bias=False)
        else:
            self.register_parameter('lin_pos', None)
        skip_channels = heads * out_channels if concat else out_channels
        if root_weight:
            self.lin_skip = Linear(in_channels, skip_channels, bias=bias)
        else:
            self.register_parameter('lin_skip', None)
        self.reset_parameters()

    def reset_parameters(self):
        r"""Resets all learnable parameters."""
        for module in (self.lin_query, self.lin_key, self.lin_value,
                       self.norm_query, self.norm_key, self.lin_pos,
                       self.lin_skip):
            if module is not None:
                module.reset_parameters()

    def project(self, x: Tensor, pos: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        r"""Per-head normalised queries and keys, values and position
        embeddings, each ``[N, H, C]``."""
        heads, channels = self.heads, self.out_channels
        query = self.norm_query(self.lin_query(x).view(-1, heads, channels))
        key = self.norm_key(self.lin_key(x).view(-1, heads, channels))
        value = self.lin_value(x).view(-1, heads, channels)
        if pos is not None:
            # channels**-0.25 on both sides keeps eps.eps on q.k/sqrt(C)'s scale.
            pos = self.lin_pos(pos).view(-1, heads, channels) * \
                channels**-0.25
        return query, key, value, pos

    def forward(self, x: Tensor, edge_index: Tensor,
                pos: Optional[Tensor] = None,
                return_attention_weights: Optional[bool] = None,
                layout: Optional[TreeLayout] = None
                ) -> Union[Tensor, Tuple[Tensor, AttentionWeights]]:
        r"""Runs the layer.

        Args:
            x (torch.Tensor): ``[N, F_in]`` node features (leaf rows are
                attended; internal rows only feed their own skip term).
            edge_index (torch.Tensor): ``[2, E]`` child -> parent edges.
            pos (torch.Tensor, optional): ``[N, pos_channels]`` sibling
                positions; required exactly when the layer was built with
                :obj:`pos_channels`.
            return_attention_weights (bool, optional): also return the
                attention as an :class:`AttentionWeights` (O(N) memory;
                ``.dense()`` expands it). (default: :obj:`None`)
            layout (TreeLayout, optional): the forest's structure, as the
                loader attaches it (``batch.layout``); without it the layer
                builds one (one-off use).
        """
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f'x must be [N, F], got '
                             f'{list(getattr(x, "shape", [])) or type(x)}')
        if (pos is None) != (self.pos_channels is None):
            raise ValueError('pos is required exactly when the layer is built '
                             f'with pos_channels (pos_channels='
                             f'{self.pos_channels}, pos '
                             f'{"missing" if pos is None else "given"})')
        if pos is not None and (pos.dim() != 2 or pos.size(0) != x.size(0)
                                or pos.size(1) != self.pos_channels):
            raise ValueError(f'pos must be [{x.size(0)}, {self.pos_channels}]'
                             f' (one row per node), got {list(pos.shape)}')
        if layout is None:
            layout = tree_layout(edge_index, x.size(0), device=x.device,
                                 dtype=attention_dtype(x.dtype))
        query, key, value, pos_embedding = self.project(x, pos)
        out = hsa_attention(query, key, value, edge_index,
                            pos=pos_embedding, include_self=self.include_self,
                            layout=layout)
        out = F.dropout(out, p=self.dropout, training=self.training)
        out = out.reshape(-1, self.heads * self.out_channels) if self.concat \
            else out.mean(dim=1)
        if self.lin_skip is not None:
            out = out + self.lin_skip(x)
        if return_attention_weights:
            return out, AttentionWeights(query.detach(), key.detach(),
                                         None if pos_embedding is None else
                                         pos_embedding.detach(), edge_index,
                                         self.include_self)
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads})')
