r"""Pictures of hierarchies and of their HSA attention matrices.

Needs matplotlib (``pip install hsa-graph[plot]``), imported lazily.

Example::

    >>> import hsa_graph
    >>> h = hsa_graph.from_image(torch.rand(1, 16, 16), patch_size=2)
    >>> ax = plot_hierarchy(h, path='tree.png')  # doctest: +SKIP
    >>> ax = plot_attention(h, path='attention.png')  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .hierarchy import Hierarchy
from .convert._common import nodes_by_depth

__all__ = ['plot_hierarchy', 'plot_attention', 'tree_positions',
           'leaf_order']


def _pyplot():
    try:
        import matplotlib
        if matplotlib.get_backend().lower() not in ('agg', 'pdf', 'svg') and \
                not _has_display():
            matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("hsa_graph.plot needs matplotlib: pip install "
                          "'hsa-graph[plot]' (or pip install matplotlib)"
                          ) from error
    return plt


def _has_display() -> bool:
    import os
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def _children(h: Hierarchy) -> List[List[int]]:
    children: List[List[int]] = [[] for _ in range(h.num_nodes)]
    for child, par in zip(*h.edge_index.tolist()):
        children[par].append(child)
    for kids in children:
        kids.sort()
    return children


def leaf_order(h: Hierarchy) -> Tensor:
    r"""Leaf ids in depth-first order (children by id), so that every
    subtree's leaves are contiguous: the order in which attention blocks show.
    """
    children = _children(h)
    order: List[int] = []
    for root in h.root_index.tolist():
        stack = [root]
        while stack:
            node = stack.pop()
            if not children[node]:
                order.append(node)
            stack.extend(reversed(children[node]))
    return torch.tensor(order, dtype=torch.long)


def tree_positions(h: Hierarchy) -> Dict[int, Tuple[float, float]]:
    r"""A tidy drawing layout: leaves evenly spaced along x in depth-first
    order, every internal node centred over its leaves, y = -depth. Returns
    ``{node: (x, y)}`` for :func:`networkx.draw_networkx`."""
    order = leaf_order(h)
    depth = h.depth.tolist()
    x = torch.zeros(h.num_nodes, dtype=torch.float64)
    count = torch.zeros(h.num_nodes, dtype=torch.float64)
    x[order] = torch.arange(order.numel(), dtype=torch.float64)
    count[order] = 1
    layout = h.layout
    parent = layout.parent
    for nodes in nodes_by_depth(layout.depth)[:0:-1]:
        leafy = layout.is_leaf[nodes]
        # internal nodes are normalised before they pass their mean upward
        inner = nodes[~leafy]
        x[inner] = x[inner] / count[inner].clamp(min=1)
        count[inner] = 1
        x.index_add_(0, parent[nodes], x[nodes])
        count.index_add_(0, parent[nodes], count[nodes])
    roots = h.root_index
    x[roots] = x[roots] / count[roots].clamp(min=1)
    return {i: (float(x[i]), -float(depth[i])) for i in range(h.num_nodes)}


def plot_hierarchy(h: Hierarchy, ax: Any = None, color_by: str = 'depth',
                   path: Optional[str] = None, node_size: Optional[float] = None,
                   max_nodes: int = 20000, title: Optional[str] = None,
                   cmap: str = 'viridis') -> Any:
    r"""Draws a hierarchy top-down with networkx, coloured by depth or type.

    Args:
        h (Hierarchy): the tree (or a batched forest).
        ax (matplotlib.axes.Axes, optional): where to draw; a new figure
            otherwise.
        color_by (str or Tensor): ``'depth'``, ``'type'`` (``h.node_type``,
            with ``h.node_type_names`` in the legend when present), ``'leaf'``
            (leaves vs internal nodes), or a ``[N]`` tensor of values (e.g.
            pixel intensities). (default: ``'depth'``)
        path (str, optional): save the figure there (PNG, 150 dpi).
        node_size (float, optional): marker size (default: from the size).
        max_nodes (int): refuse larger trees, which draw as noise.
            (default: :obj:`20000`)
        title (str, optional): axes title.
        cmap (str): matplotlib colour map. (default: ``'viridis'``)

    Returns:
        The matplotlib axes.
    """
    import networkx as nx
    plt = _pyplot()
    if h.num_nodes > max_nodes:
        raise ValueError(f'the hierarchy has {h.num_nodes} nodes; drawing more '
                         f'than max_nodes={max_nodes} gives an unreadable '
                         f'picture (raise max_nodes to force it)')
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4.5))
    coordinates = tree_positions(h)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(h.num_nodes))
    graph.add_edges_from(zip(h.edge_index[1].tolist(), h.edge_index[0].tolist()))
    legend = None
    if color_by == 'depth':
        values = h.depth.tolist()
        label = 'depth'
    elif color_by == 'leaf':
        values = h.is_leaf.long().tolist()
        label = 'leaf'
    elif isinstance(color_by, Tensor):
        if color_by.numel() != h.num_nodes:
            raise ValueError(f'color_by has {color_by.numel()} values for '
                             f'{h.num_nodes} nodes')
        values = color_by.detach().flatten().double().tolist()
        label = 'value'
    elif color_by == 'type':
        node_type = getattr(h, 'node_type', None)
        if node_type is None:
            raise ValueError("color_by='type' needs h.node_type")
        values = node_type.tolist()
        names = getattr(h, 'node_type_names', None)
        legend = {t: (names[t] if names and 0 <= t < len(names) else
                      'none' if t < 0 else str(t))
                  for t in sorted(set(values))}
        label = 'node type'
    else:
        raise ValueError(f"color_by must be 'depth', 'type', 'leaf' or a "
                         f'tensor, got {color_by!r}')
    size = node_size or max(4.0, min(80.0, 6000.0 / max(h.num_nodes, 1)))
    nx.draw_networkx_edges(graph, coordinates, ax=ax, arrows=False,
                           width=0.4, alpha=0.5)
    colormap = plt.get_cmap(cmap)
    low, high = min(values), max(values)
    span = (high - low) or 1
    colours = [colormap((v - low) / span) for v in values]
    nx.draw_networkx_nodes(graph, coordinates, ax=ax, node_size=size,
                           node_color=colours, linewidths=0.3,
                           edgecolors='0.55')
    if legend is not None:
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker='o', linestyle='', color=colormap(
            (t - low) / span), label=name) for t, name in legend.items()]
        ax.legend(handles=handles, title=label, loc='upper right', fontsize=8)
    else:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        mappable = ScalarMappable(norm=Normalize(low, high), cmap=colormap)
        bar = ax.figure.colorbar(mappable, ax=ax, label=label, fraction=0.03)
        if not isinstance(color_by, Tensor) and high - low <= 12:
            bar.set_ticks(list(range(int(low), int(high) + 1)))
    ax.set_title(title or f'{h.num_leaves} leaves, {h.num_nodes} nodes, '
                 f'height {h.height}')
    ax.set_axis_off()
    if path is not None:
        ax.figure.savefig(path, dpi=150, bbox_inches='tight')
    return ax


def plot_attention(h: Hierarchy, query: Optional[Tensor] = None,
                   key: Optional[Tensor] = None, pos: Any = 'auto',
                   head: int = 0, include_self: bool = False, ax: Any = None,
                   path: Optional[str] = None, channels: int = 16,
                   seed: int = 0, log_scale: bool = True,
                   max_leaves: int = 4096, title: Optional[str] = None) -> Any:
    r"""Draws the dense HSA attention matrix :math:`\theta` between the leaves
    of a hierarchy, leaves in depth-first order so that its block structure
    (one constant block per pair of sibling subtrees) is visible.

    Args:
        h (Hierarchy): the tree.
        query (Tensor, optional): ``[N, H, C]`` queries; random (seeded)
            unit-variance vectors when omitted.
        key (Tensor, optional): ``[N, H, C]`` keys; random when omitted.
        pos (Tensor or str, optional): sibling positions passed to
            :func:`~hsa_graph.hsa_attention_matrix`; ``'auto'`` uses ``h.pos``.
            (default: ``'auto'``)
        head (int): which head to draw. (default: :obj:`0`)
        include_self (bool): see :func:`~hsa_graph.hsa_attention`.
        ax (matplotlib.axes.Axes, optional): where to draw.
        path (str, optional): save the figure there (PNG, 150 dpi).
        channels (int): width of the random queries/keys. (default: :obj:`16`)
        seed (int): seed of the random queries/keys. (default: :obj:`0`)
        log_scale (bool): colour by :math:`\log_{10}\theta` (blocks far apart
            in the tree differ by orders of magnitude). (default: :obj:`True`)
        max_leaves (int): refuse larger trees (the matrix is dense).
            (default: :obj:`4096`)
        title (str, optional): axes title.

    Returns:
        The matplotlib axes.
    """
    from .functional import hsa_attention_matrix
    plt = _pyplot()
    if h.num_leaves > max_leaves:
        raise ValueError(f'{h.num_leaves} leaves: the dense matrix is too '
                         f'large to draw (max_leaves={max_leaves})')
    generator = torch.Generator().manual_seed(seed)
    if query is None:
        query = torch.randn(h.num_nodes, 1, channels, generator=generator)
    if key is None:
        key = torch.randn(query.shape, generator=generator)
    if isinstance(pos, str):
        pos = getattr(h, 'pos', None) if pos == 'auto' else None
    theta = hsa_attention_matrix(query, key, h.edge_index, pos=pos,
                                 include_self=include_self,
                                 num_nodes=h.num_nodes)[head]
    order = leaf_order(h)
    block = theta[order][:, order].detach().double()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5.2))
    if log_scale:
        shown = torch.log10(block.clamp(min=1e-12))
        shown[block <= 0] = float('nan')
        label = r'$\log_{10}\,\theta_{ij}$'
    else:
        shown, label = block, r'$\theta_{ij}$'
    image = ax.imshow(shown.numpy(), cmap='magma', interpolation='nearest')
    ax.figure.colorbar(image, ax=ax, label=label, fraction=0.046)
    ax.set_xlabel('key leaf (depth-first order)')
    ax.set_ylabel('query leaf (depth-first order)')
    ax.set_title(title or f'HSA attention, {h.num_leaves} leaves')
    if path is not None:
        ax.figure.savefig(path, dpi=150, bbox_inches='tight')
    return ax
