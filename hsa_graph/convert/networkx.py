r"""Trees given as networkx graphs, both ways."""
from __future__ import annotations

from typing import Any, Hashable, List, Optional, Sequence, Union

import networkx as nx
import torch
from torch import Tensor

from ..hierarchy import Hierarchy
from ._common import stack_node_attribute

__all__ = ['from_networkx', 'to_networkx']

_NOT_A_TREE = ('use hsa_graph.hierarchy_from_graph(G) to cluster a general '
               'graph into a hierarchy instead')


def _tree_problem(graph: nx.Graph) -> str:
    r"""Why :obj:`graph` is not a tree, in words."""
    loops = list(nx.selfloop_edges(graph))
    if loops:
        return f'it has a self-loop on node {loops[0][0]!r}'
    if graph.is_multigraph():
        for u, v in graph.edges():
            if graph.number_of_edges(u, v) > 1:
                return f'it has parallel edges between {u!r} and {v!r}'
    undirected = graph.to_undirected(as_view=True)
    components = nx.number_connected_components(undirected)
    if components > 1:
        return f'it has {components} connected components (a forest)'
    if graph.is_directed():
        try:
            cycle = [u for u, *_ in nx.find_cycle(graph)]
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            return f'it has a directed cycle through nodes {cycle[:10]}'
        # Acyclic but not a tree: some node has several parents whichever
        # way the edges are read (e.g. a diamond a -> b, a -> c, b -> d,
        # c -> d), or the directions are mixed.
        into = next(((n, list(graph.predecessors(n))) for n, d in
                     graph.in_degree() if d > 1), None)
        out = next(((n, list(graph.successors(n))) for n, d in
                    graph.out_degree() if d > 1), None)
        if into and out:
            return (f'it is a directed acyclic graph in which node '
                    f'{into[0]!r} has several parents {into[1][:5]} '
                    f'reading edges as parent -> child, and node '
                    f'{out[0]!r} several parents {out[1][:5]} reading them '
                    f'as child -> parent')
        return ('its edge directions are mixed: they neither all point '
                'away from one root nor all towards it')
    if graph.number_of_edges() != graph.number_of_nodes() - 1:
        cycle = [u for u, *_ in nx.find_cycle(graph)]
        return f'it has a cycle through nodes {cycle[:10]}'
    return 'it is not a tree'


def _stack_attribute(graph: nx.Graph, nodes: List[Hashable],
                     names: Union[str, Sequence[str]]) -> Optional[Tensor]:
    names = [names] if isinstance(names, str) else list(names)
    columns = []
    for name in names:
        column = stack_node_attribute(graph, nodes, name)
        if column is None:
            if len(names) > 1:
                raise ValueError(f"node attribute '{name}' is missing")
            return None
        columns.append(column.view(len(nodes), -1) if len(names) > 1
                       else column)
    return columns[0] if len(columns) == 1 else torch.cat(
        [c.to(torch.get_default_dtype()) for c in columns], dim=1)


def from_networkx(graph: nx.Graph, root: Optional[Hashable] = None,
                  x: Optional[Union[str, Sequence[str]]] = 'x',
                  pos: Optional[Union[str, Sequence[str]]] = 'pos',
                  node_type: Optional[str] = 'node_type') -> Hierarchy:
    r"""Converts a tree given as a networkx graph into a
    :class:`~hsa_graph.Hierarchy`.

    * a :class:`networkx.DiGraph` must be an arborescence: edges point from
      parent to child (``nx.is_arborescence``), or all from child to parent;
      :obj:`root`, when given, must be its root;
    * an undirected :class:`networkx.Graph` must be a tree and needs
      :obj:`root`.

    Node ``i`` of the hierarchy is ``list(graph.nodes)[i]``: ``source_id[i] =
    i`` and ``source_node[i]`` is the original node key, so
    :func:`to_networkx` gives the same graph back. A graph that is not a tree
    (cycle, forest, self-loop, parallel edges, a node with two parents)
    raises a :class:`ValueError` that says why.

    Args:
        graph (networkx.Graph): the tree.
        root (hashable, optional): the root node (required for undirected
            graphs).
        x (str or list of str, optional): node attribute(s) stacked (and
            concatenated) into ``x``, used when present on every node.
            (default: ``'x'``)
        pos (str or list of str, optional): node attribute(s) for ``pos``
            (the node's position in its parent's domain); a scalar attribute
            gives ``[N, 1]``. (default: ``'pos'``)
        node_type (str, optional): node attribute for ``node_type``.
            (default: ``'node_type'``)

    Raises:
        ValueError: for an empty graph, a non-tree, a missing or wrong root,
            or an attribute set on some nodes only.

    Shapes:
        - **output:** ``N = graph.number_of_nodes()`` nodes.

    Example::

        >>> G = nx.DiGraph([('doc', 's1'), ('doc', 's2'), ('s1', 'w1')])
        >>> h = from_networkx(G)
        >>> h.source_node
        ['doc', 's1', 's2', 'w1']
    """
    if not isinstance(graph, nx.Graph):
        raise ValueError(f'expected a networkx graph, got '
                         f'{type(graph).__name__}')
    if graph.number_of_nodes() == 0:
        raise ValueError('the graph is empty: a hierarchy needs at least one '
                         'node')
    nodes = list(graph.nodes)
    number = {node: i for i, node in enumerate(nodes)}
    if root is not None and root not in number:
        raise ValueError(f'root {root!r} is not a node of the graph')
    is_tree = (not graph.is_multigraph() or all(
        graph.number_of_edges(u, v) == 1 for u, v in graph.edges())) and \
        nx.number_of_selfloops(graph) == 0
    parent = torch.full((len(nodes), ), -1, dtype=torch.long)
    if graph.is_directed():
        if is_tree and nx.is_arborescence(graph):
            pairs = graph.edges()
        elif is_tree and nx.is_arborescence(graph.reverse(copy=False)):
            pairs = ((v, u) for u, v in graph.edges())
        else:
            raise ValueError(f'the directed graph is not a tree: '
                             f'{_tree_problem(graph)}; {_NOT_A_TREE}')
        for up, down in pairs:
            parent[number[down]] = number[up]
        found = nodes[int((parent < 0).nonzero()[0])]
        if root is not None and root != found:
            raise ValueError(f'root {root!r} does not match the graph, whose '
                             f'root is {found!r}')
    else:
        if not (is_tree and nx.is_tree(graph)):
            raise ValueError(f'the graph is not a tree: '
                             f'{_tree_problem(graph)}; {_NOT_A_TREE}')
        if root is None:
            raise ValueError('an undirected tree needs a root: pass root=<a '
                             'node>, or give a DiGraph with edges parent -> '
                             'child')
        for down, up in nx.bfs_predecessors(graph, root):
            parent[number[down]] = number[up]
    features = None if x is None else _stack_attribute(graph, nodes, x)
    positions = None if pos is None else _stack_attribute(graph, nodes, pos)
    if positions is not None and positions.dim() == 1:
        positions = positions.view(-1, 1)
    if positions is not None and not positions.is_floating_point():
        positions = positions.to(torch.get_default_dtype())
    types = None if node_type is None else _stack_attribute(
        graph, nodes, node_type)
    extra = {} if types is None else {'node_type': types.long()}
    return Hierarchy.from_parent(parent, x=features, pos=positions,
                                 source_id=torch.arange(len(nodes)),
                                 source_node=nodes, **extra)


def to_networkx(h: Hierarchy, node_attrs: Sequence[str] = ('x', 'pos',
                                                          'node_type'),
                child_to_parent: bool = False) -> nx.DiGraph:
    r"""Converts a hierarchy (or a batched forest) into a
    :class:`networkx.DiGraph` with edges parent -> child (an arborescence per
    tree), the inverse of :func:`from_networkx`.

    Nodes are labelled by ``h.source_node`` when present (a hierarchy from
    :func:`from_networkx`), otherwise by their ids ``0 .. N-1``; they are added
    in id order, so ``list(G.nodes)[i]`` is node ``i``.

    Args:
        h (Hierarchy): the hierarchy.
        node_attrs (list of str): tensor attributes copied to every node as
            Python values (``x[i].tolist()``); absent ones are skipped.
            (default: ``('x', 'pos', 'node_type')``)
        child_to_parent (bool): point edges from child to parent like
            ``h.edge_index``. (default: :obj:`False`)

    Returns:
        :class:`networkx.DiGraph` with ``h.num_nodes`` nodes and
        ``h.edge_index.size(1)`` edges.

    Example::

        >>> G = to_networkx(Hierarchy.from_parent([-1, 0, 0]))
        >>> list(G.edges)
        [(0, 1), (0, 2)]
    """
    labels: List[Any] = getattr(h, 'source_node', None) or list(
        range(h.num_nodes))
    if len(labels) != h.num_nodes:
        raise ValueError(f'source_node lists {len(labels)} nodes but the '
                         f'hierarchy has {h.num_nodes}')
    graph = nx.DiGraph()
    columns = {name: getattr(h, name) for name in node_attrs
               if isinstance(getattr(h, name, None), Tensor)}
    values = {name: column.tolist() for name, column in columns.items()}
    for i, label in enumerate(labels):
        graph.add_node(label, **{name: v[i] for name, v in values.items()})
    child, par = h.edge_index.tolist()
    if child_to_parent:
        graph.add_edges_from((labels[c], labels[p]) for c, p in zip(child, par))
    else:
        graph.add_edges_from((labels[p], labels[c]) for c, p in zip(child, par))
    return graph
