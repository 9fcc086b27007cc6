r"""`HSAConv`: a PyG layer running hierarchical self-attention over a tree."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor
from torch.nn import LayerNorm
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from ..functional.attention import hsa_attention
from ..functional.dense import hsa_attention_matrix
from ..layout import TreeLayout, tree_layout

__all__ = ['HSAConv']


class HSAConv(MessagePassing):
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
            :obj:`pos` given to :meth:`forward`; they are projected to one
            position embedding per head, whose dot products bias sibling
            logits. Without it, :obj:`pos` is used as the embedding itself.
            (default: :obj:`None`)
        **kwargs (optional): additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge
          indices :math:`(2, |\mathcal{E}|)` (child -> parent), positions
          :math:`(|\mathcal{V}|, P)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, H * F_{out})` or
          :math:`(|\mathcal{V}|, F_{out})` if :obj:`concat=False`; with
          :obj:`return_attention_weights`, also the dense attention
          :math:`(H, |\mathcal{V}|, |\mathcal{V}|)`.
    """
    def __init__(self, in_channels: int, out_channels: int, heads: int = 1,
                 concat: bool = True, dropout: float = 0.,
                 include_self: bool = False, bias: bool = True,
                 root_weight: bool = True, pos_channels: Optional[int] = None,
                 **kwargs):
        kwargs.setdefault('aggr', 'add')
        super().__init__(node_dim=0, **kwargs)
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
        super().reset_parameters()
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
        if pos is not None and self.lin_pos is not None:
            # channels**-0.25 on both sides keeps eps.eps on q.k/sqrt(C)'s scale.
            pos = self.lin_pos(pos).view(-1, heads, channels) * \
                channels**-0.25
        return query, key, value, pos

    def forward(self, x: Tensor, edge_index: Tensor,
                pos: Optional[Tensor] = None,
                return_attention_weights: Optional[bool] = None,
                layout: Optional[TreeLayout] = None
                ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Runs the layer.

        Args:
            x (torch.Tensor): ``[N, F_in]`` node features (leaf rows are
                attended; internal rows only feed their own skip term).
            edge_index (torch.Tensor): ``[2, E]`` child -> parent edges.
            pos (torch.Tensor, optional): ``[N, P]`` sibling positions.
            return_attention_weights (bool, optional): also return the dense
                ``[H, N, N]`` attention matrix (small trees only: it is
                :math:`O(N^2)`). (default: :obj:`None`)
            layout (TreeLayout, optional): precomputed structure; pass it when
                compiling, or to share it with other layers explicitly.
        """
        if x.dim() != 2:
            raise ValueError(f'x must be [N, F], got {list(x.shape)}')
        if pos is not None and pos.size(0) != x.size(0):
            raise ValueError(f'pos has {pos.size(0)} rows but x has '
                             f'{x.size(0)}')
        if layout is None:
            layout = tree_layout(edge_index, x.size(0), device=x.device)
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
            theta = hsa_attention_matrix(query, key, edge_index,
                                         pos=pos_embedding,
                                         include_self=self.include_self,
                                         num_nodes=x.size(0))
            return out, theta
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads})')
