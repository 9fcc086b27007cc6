r"""A whole-hierarchy classifier: token embedding, :class:`HSAEncoder`,
pooling and a linear head."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..layout import TreeLayout, attention_dtype, tree_layout
from .encoder import HSAEncoder
from .pooling import leaf_mean_pool, pool_to_depth

__all__ = ['HierarchyClassifier']


class HierarchyClassifier(nn.Module):
    r"""Classifies whole hierarchies (e.g. documents from
    :func:`~hsa_graph.convert.from_document`): leaf features, an
    :class:`~hsa_graph.nn.HSAEncoder`, a pooling step and a linear head.

    Leaf features come from ``data.x``, or, when :obj:`token_embedding` is
    given, from embedding ``data.token_id`` (``-1`` on internal nodes, which
    get zeros). Pooling is the mean over each tree's leaves, or, with
    :obj:`pool_depth`, the mean over the nodes at that depth of their leaf
    means (each sentence counts once, whatever its length).

    Args:
        encoder (HSAEncoder): the encoder.
        num_classes (int): number of classes.
        token_embedding (torch.nn.Module, optional): maps ``token_id`` to
            ``[N, encoder.in_channels]`` features, e.g. a trainable
            :class:`torch.nn.Embedding` or a frozen pretrained one.
        pool_depth (int, optional): pool through the nodes at this depth.
        dropout (float): dropout before the head. (default: :obj:`0.1`)

    Shapes:
        - **input:** a (batched) hierarchy with ``edge_index``, ``pos``,
          ``family_type`` and ``x`` or ``token_id``
        - **output:** ``[B, num_classes]`` logits
    """

    def __init__(self, encoder: HSAEncoder, num_classes: int,
                 token_embedding: Optional[nn.Module] = None,
                 pool_depth: Optional[int] = None, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.token_embedding = token_embedding
        self.pool_depth = pool_depth
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.channels, num_classes)

    def embed(self, data) -> Tensor:
        r"""``[N, in_channels]`` input features of every node."""
        if self.token_embedding is None:
            if getattr(data, 'x', None) is None:
                raise ValueError('The hierarchy has no x; give the classifier '
                                 'a token_embedding for token_id')
            return data.x
        token_id = getattr(data, 'token_id', None)
        if token_id is None:
            raise ValueError('The hierarchy has no token_id to embed')
        is_token = (token_id >= 0).unsqueeze(-1)
        x = self.token_embedding(token_id.clamp(min=0))
        return x * is_token.to(x.dtype)

    def forward(self, data) -> Tensor:
        # The loader's layout (hsa_graph.loader.DataLoader), else one built
        # here (one-off use).
        layout = getattr(data, 'layout', None)
        if not isinstance(layout, TreeLayout):
            layout = tree_layout(data.edge_index, data.num_nodes,
                                 device=data.edge_index.device,
                                 dtype=attention_dtype(next(
                                     self.parameters()).dtype))
        batch = getattr(data, 'batch', None)
        num_graphs = getattr(data, 'num_graphs', 1) if batch is not None \
            else 1
        x = self.encoder(self.embed(data), data.edge_index,
                         pos=getattr(data, 'pos', None),
                         family_type=getattr(data, 'family_type', None),
                         node_type=getattr(data, 'node_type', None),
                         layout=layout)
        if self.pool_depth is None:
            pooled = leaf_mean_pool(x, layout, batch, num_graphs)
        else:
            nodes, _, node_batch = pool_to_depth(x, layout, self.pool_depth,
                                                 batch)
            if node_batch is None:
                pooled = nodes.mean(0, keepdim=True)
            else:
                from torch_geometric.utils import scatter
                pooled = scatter(nodes, node_batch, dim=0,
                                 dim_size=num_graphs, reduce='mean')
        return self.head(self.dropout(pooled))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.encoder}, '
                f'num_classes={self.head.out_features})')
