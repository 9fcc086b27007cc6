r"""Reusable checks for code built on HSA, in the spirit of ``e3nn.util.test``:
each layer or fast path gets a few-line test by calling these.

All assertions raise :class:`AssertionError` with the largest deviation.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence

import torch
from torch import Tensor

from .functional.attention import hsa_attention
from .functional.dense import hsa_attention_matrix
from .hierarchy import Hierarchy

__all__ = ['random_parent', 'random_hierarchy', 'tolerance',
           'assert_matches_dense_reference', 'assert_flat_tree_equals_softmax',
           'assert_batch_invariant', 'assert_no_graph_breaks',
           'compiled_graph_counts']


def tolerance(dtype: torch.dtype) -> dict:
    r"""``atol``/``rtol`` suited to :obj:`dtype` for HSA outputs."""
    return {
        torch.float64: dict(atol=1e-10, rtol=1e-9),
        torch.float32: dict(atol=2e-5, rtol=2e-4),
        torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
        torch.float16: dict(atol=5e-3, rtol=5e-3),
    }[dtype]


def random_parent(num_nodes: int, generator: Optional[torch.Generator] = None,
                  max_children: Optional[int] = None) -> Tensor:
    r"""A random parent vector of a tree with :obj:`num_nodes` nodes, node 0
    the root. Node :math:`i` picks its parent uniformly among earlier nodes
    (optionally with at most :obj:`max_children` children each), which gives
    ragged trees with leaves at mixed depths and single-child chains."""
    parent = [-1]
    counts = [0] * num_nodes
    for node in range(1, num_nodes):
        choices = [p for p in range(node)
                   if max_children is None or counts[p] < max_children]
        pick = choices[int(torch.randint(len(choices), (1, ),
                                         generator=generator))]
        counts[pick] += 1
        parent.append(pick)
    return torch.tensor(parent)


def random_hierarchy(num_nodes: int, channels: int = 4,
                     generator: Optional[torch.Generator] = None
                     ) -> Hierarchy:
    r"""A random :class:`~hsa_graph.Hierarchy` with Gaussian features."""
    parent = random_parent(num_nodes, generator)
    x = torch.randn(num_nodes, channels, generator=generator)
    return Hierarchy.from_parent(parent, x=x)


def assert_matches_dense_reference(query: Tensor, key: Tensor, value: Tensor,
                                   edge_index: Tensor, *,
                                   pos: Optional[Tensor] = None,
                                   include_self: bool = False,
                                   attention: Callable = hsa_attention,
                                   **tol) -> None:
    r"""Asserts that :obj:`attention` (default: the dynamic program) matches
    ``theta @ value`` with :math:`\theta` from the dense closed form, on
    every leaf row, and that internal rows are the mean of their leaves."""
    out = attention(query, key, value, edge_index, pos=pos,
                    include_self=include_self)
    theta = hsa_attention_matrix(query, key, edge_index, pos=pos,
                                 include_self=include_self)
    expected = torch.einsum('hij,jhc->ihc', theta, value.to(theta.dtype))
    hierarchy = Hierarchy(edge_index=edge_index, num_nodes=query.size(0))
    is_leaf = hierarchy.is_leaf
    tol = tol or tolerance(query.dtype)
    assert torch.isfinite(out).all(), 'non-finite output'
    torch.testing.assert_close(out[is_leaf].to(expected.dtype),
                               expected[is_leaf], **tol)
    from .functional.passes import tree_upward
    torch.testing.assert_close(out, tree_upward(out, edge_index,
                                                reduce='mean'), **tol)


def assert_flat_tree_equals_softmax(num_leaves: int = 7, heads: int = 2,
                                    channels: int = 5,
                                    dtype: torch.dtype = torch.float64,
                                    attention: Callable = hsa_attention
                                    ) -> None:
    r"""Asserts that on a one-level tree, HSA with ``include_self=True`` is
    :func:`torch.nn.functional.scaled_dot_product_attention`, and without it
    softmax over :math:`j \neq i`."""
    num_nodes = num_leaves + 1
    parent = torch.zeros(num_nodes, dtype=torch.long)
    parent[0] = -1
    edge_index = Hierarchy.from_parent(parent).edge_index
    query, key, value = (torch.randn(num_nodes, heads, channels, dtype=dtype)
                         for _ in range(3))
    tol = tolerance(dtype)
    q, k, v = (t[1:].transpose(0, 1) for t in (query, key, value))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = attention(query, key, value, edge_index, include_self=True)
    torch.testing.assert_close(out[1:], expected.transpose(0, 1), **tol)
    diagonal = torch.eye(num_leaves, dtype=torch.bool)
    mask = ~diagonal
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask)
    out = attention(query, key, value, edge_index, include_self=False)
    torch.testing.assert_close(out[1:], expected.transpose(0, 1), **tol)


def assert_batch_invariant(hierarchies: Sequence[Hierarchy],
                           run: Callable[[Tensor, Tensor], Tensor],
                           **tol) -> None:
    r"""Asserts that ``run(x, edge_index)`` on a PyG batch of
    :obj:`hierarchies` equals running it on each hierarchy alone: trees in
    one batch never see each other."""
    from torch_geometric.data import Batch
    batch = Batch.from_data_list(list(hierarchies))
    out = run(batch.x, batch.edge_index)
    pieces = [run(h.x, h.edge_index) for h in hierarchies]
    tol = tol or tolerance(batch.x.dtype)
    torch.testing.assert_close(out, torch.cat(pieces, dim=0), **tol)


def assert_no_graph_breaks(fn: Callable, *args, **kwargs) -> None:
    r"""Asserts that :func:`torch._dynamo.explain` finds a single graph and no
    break in ``fn(*args, **kwargs)``."""
    import torch._dynamo
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args, **kwargs)
    assert explanation.graph_break_count == 0, (
        f'{explanation.graph_break_count} graph breaks: '
        f'{[str(b.reason) for b in explanation.break_reasons]}')
    assert explanation.graph_count == 1, \
        f'{explanation.graph_count} graphs'


def compiled_graph_counts(batches: Iterable[Hierarchy],
                          heads: int = 2,
                          channels: int = 4) -> List[int]:
    r"""Runs :func:`hsa_attention` under ``torch.compile(dynamic=True)``
    (dynamo's ``eager`` backend: the guards of any backend, no code
    generation) on every batch, asserts each result equals eager mode, and
    returns the number of compiled graphs after each batch."""
    import torch._dynamo
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(
        lambda q, k, v, layout: hsa_attention(q, k, v, layout=layout),
        backend='eager', dynamic=True)
    counts = []
    for batch in batches:
        layout = batch.layout
        q, k, v = (torch.randn(batch.num_nodes, heads, channels)
                   for _ in range(3))
        torch.testing.assert_close(compiled(q, k, v, layout),
                                   hsa_attention(q, k, v, layout=layout))
        counts.append(int(counters['stats']['unique_graphs']))
    return counts
