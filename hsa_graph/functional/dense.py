r"""The dense HSA attention matrix, straight from the closed form.

This is the O(N^2) reference every fast path is tested against, so it shares
no code with the dynamic program beyond input validation: it works on dense
ancestor and sibling matrices in the original node order, and fills every
(query leaf, key leaf) block from the sibling pair at their lowest common
ancestor.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..layout import _depth_and_root, parent_from_edge_index
from .attention import _check_inputs

__all__ = ['hsa_attention_matrix']


def hsa_attention_matrix(query: Tensor, key: Tensor, edge_index: Tensor, *,
                         pos: Optional[Tensor] = None,
                         include_self: bool = False,
                         num_nodes: Optional[int] = None) -> Tensor:
    r"""The dense HSA attention matrix :math:`\theta` (see
    :func:`~hsa_graph.hsa_attention`), computed from the closed form in
    :math:`O(N^2)` memory: for small trees, tests and pictures.

    For sibling nodes :math:`A \neq C` with parent :math:`P`, every query
    leaf :math:`i \in \ell(A)` and key leaf :math:`j \in \ell(C)` share

    .. math::
        \theta_{ij} = \exp\big(u(P) + s(A \to C) - \log Z(A)\big),
        \qquad u(P) = \sum_{B \in \mathrm{path}(P)} \log \mu(B),

    so :math:`\theta = L^\top W L` with :math:`L` the node-by-leaf
    membership matrix and :math:`W` the sibling weights. With
    :obj:`include_self`, :math:`\theta_{ii} = \exp u(i)`.

    Args:
        query (torch.Tensor): ``[N, H, C]`` queries (leaf rows are read).
        key (torch.Tensor): ``[N, H, C]`` keys (leaf rows are read).
        edge_index (torch.Tensor): ``[2, E]`` child -> parent edges.
        pos (torch.Tensor, optional): ``[N, P]`` or ``[N, H, P]`` sibling
            positions. (default: :obj:`None`)
        include_self (bool): leaves attend to themselves.
            (default: :obj:`False`)
        num_nodes (int, optional): number of nodes (default: ``query.size(0)``).

    Shapes:
        - **output:** ``[H, N, N]``; rows and columns of internal nodes are
          zero, and each leaf row sums to 1 (when its tree has another leaf,
          or with :obj:`include_self`).
    """
    _check_inputs(query, key, None, pos)
    num_nodes = query.size(0) if num_nodes is None else num_nodes
    if num_nodes != query.size(0):
        raise ValueError(f'query has {query.size(0)} rows but num_nodes is '
                         f'{num_nodes}')
    parent = parent_from_edge_index(edge_index, num_nodes).to(query.device)
    depth, _ = _depth_and_root(parent.cpu())
    depth = depth.to(query.device)
    dtype = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) \
        else query.dtype
    query, key = query.to(dtype), key.to(dtype)
    heads, channels = query.shape[1:]
    scale = 1.0 / math.sqrt(channels)
    nodes = torch.arange(num_nodes, device=query.device)

    # ancestor[a, i]: a is i or one of i's ancestors.
    ancestor = torch.zeros(num_nodes, num_nodes, dtype=torch.bool,
                           device=query.device)
    current = nodes.clone()
    for _ in range(int(depth.max()) + 1):
        alive = current >= 0
        ancestor[current[alive], nodes[alive]] = True
        current = torch.where(alive, parent[current.clamp(min=0)], current)
    is_leaf = torch.bincount(parent[parent >= 0], minlength=num_nodes) == 0
    membership = (ancestor & is_leaf[None, :]).to(dtype)       # node x leaf
    leaf_count = membership.sum(1)

    mean_query = torch.einsum('al,lhc->ahc', membership, query) / \
        leaf_count[:, None, None]
    mean_key = torch.einsum('al,lhc->ahc', membership, key) / \
        leaf_count[:, None, None]
    logits = torch.einsum('ahc,bhc->hab', mean_query, mean_key) * scale
    self_logit = torch.einsum('ahc,ahc->ha', query, key) * scale
    if pos is not None:
        pos = pos.to(dtype)
        pos = pos.unsqueeze(1) if pos.dim() == 2 else pos      # (N, H|1, P)
        logits = logits + torch.einsum('ahp,bhp->hab', pos, pos)
        self_logit = self_logit + (pos * pos).sum(-1).transpose(0, 1)
    sibling = (parent[:, None] == parent[None, :]) & (parent[:, None] >= 0) \
        & (nodes[:, None] != nodes[None, :])
    minus_inf = torch.tensor(-math.inf, dtype=dtype, device=query.device)
    sibling_logits = torch.where(sibling, logits + leaf_count.log(),
                                 minus_inf)
    log_sibling_mass = torch.logsumexp(sibling_logits, dim=-1)  # (H, N)

    # Free energies bottom-up, one depth at a time.
    log_inner = torch.full((heads, num_nodes), -math.inf, dtype=dtype,
                           device=query.device)
    log_partition = log_inner.clone()
    weight = torch.zeros(num_nodes, num_nodes, dtype=dtype,
                         device=query.device)          # weight[A, B] = n(B)/n(A)
    child = parent >= 0
    weight[parent[child], nodes[child]] = leaf_count[child] / \
        leaf_count[parent[child]]
    for level in range(int(depth.max()), -1, -1):
        at = depth == level
        if include_self:
            leaf_value = self_logit
        else:
            leaf_value = torch.full_like(self_logit, -math.inf)
        terms = torch.where(weight[None] > 0,
                            weight[None] * log_partition[:, None, :],
                            torch.zeros((), dtype=dtype, device=query.device))
        inner = torch.where(is_leaf[None], leaf_value, terms.sum(-1))
        log_inner = torch.where(at[None], inner, log_inner)
        log_partition = torch.where(
            at[None], torch.logaddexp(log_inner, log_sibling_mass),
            log_partition)

    has_siblings = sibling.any(1)
    log_stay = torch.where(has_siblings[None], log_inner - log_partition,
                           torch.zeros((), dtype=dtype, device=query.device))
    log_reach = torch.where(ancestor[None], log_stay[:, :, None],
                            torch.zeros((), dtype=dtype,
                                        device=query.device)).sum(1)  # (H, N)
    parent_reach = torch.where(child[None], log_reach[:, parent.clamp(min=0)],
                               torch.zeros((), dtype=dtype,
                                           device=query.device))
    sibling_weight = torch.where(
        sibling[None],
        torch.exp(parent_reach[:, :, None] + logits -
                  log_partition[:, :, None]),
        torch.zeros((), dtype=dtype, device=query.device))    # (H, N, N)
    theta = membership.t() @ sibling_weight @ membership
    if include_self:
        theta = theta + torch.diag_embed(torch.exp(log_reach) * is_leaf)
    return theta
