r"""General graphs to hierarchies by recursive community detection.

Leaves are the graph's nodes; internal nodes are communities, found by the
Louvain method (python-igraph when installed, networkx otherwise), whose levels of aggregation nest naturally into a
tree. Families wider than the requested bounds are cut into contiguous groups
along a reverse Cuthill-McKee order of the graph (scipy), which keeps graph
neighbours together.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import reverse_cuthill_mckee
from torch import Tensor
from torch_geometric.data import Data
from tqdm.auto import tqdm

from ..hierarchy import Hierarchy
from ._common import (assemble, check_coordinates, check_features,
                      collapse_only_children, positive_int, relative_positions,
                      split_wide_families, stack_node_attribute)

__all__ = ['hierarchy_from_graph', 'cluster_parent']

_METHODS = ('louvain', 'spectral')
_ENGINES = ('auto', 'igraph', 'networkx')


def _as_edges(graph: Union[nx.Graph, Data], x: Any, pos: Any
              ) -> Tuple[int, Tensor, Tensor, Optional[Tensor], Any, Any, list]:
    r"""Normalises the input to ``(num_nodes, src, dst, weight, x, pos,
    node_list)``."""
    if isinstance(graph, nx.Graph):
        nodes = list(graph.nodes)
        number = {node: i for i, node in enumerate(nodes)}
        pairs = [(number[u], number[v], _weight(d.get('weight', 1.0), u, v))
                 for u, v, d in graph.edges(data=True)]
        if pairs:
            edges = torch.tensor(pairs, dtype=torch.float64)
            src, dst, weight = edges[:, 0].long(), edges[:, 1].long(), edges[:, 2]
        else:
            src = dst = torch.empty(0, dtype=torch.long)
            weight = torch.empty(0, dtype=torch.float64)
        if isinstance(x, str):
            x = stack_node_attribute(graph, nodes, x)
        if isinstance(pos, str):
            pos = stack_node_attribute(graph, nodes, pos)
        return len(nodes), src, dst, weight, x, pos, nodes
    if isinstance(graph, Data):
        num_nodes = graph.num_nodes
        if num_nodes is None:
            raise ValueError('the Data object has no num_nodes')
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) \
                or num_nodes < 0:
            raise ValueError(f'num_nodes must be a non-negative integer, got '
                             f'{num_nodes!r}')
        edge_index = graph.edge_index
        if edge_index is None:
            edge_index = torch.empty(2, 0, dtype=torch.long)
        if not isinstance(edge_index, Tensor):
            raise TypeError(f'edge_index must be a tensor, got '
                            f'{type(edge_index).__name__}')
        if edge_index.is_floating_point() or edge_index.is_complex() or \
                edge_index.dtype == torch.bool:
            raise TypeError(f'edge_index must hold integer node ids, got '
                            f'{edge_index.dtype} (a float edge_index is '
                            f'usually a mix-up with edge_attr or pos)')
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f'edge_index must have shape [2, num_edges], got '
                             f'{list(edge_index.shape)}')
        weight = getattr(graph, 'edge_weight', None)
        if weight is not None:
            if not isinstance(weight, Tensor) or not (
                    weight.is_floating_point() or weight.dtype in (
                        torch.int8, torch.uint8, torch.int16, torch.int32,
                        torch.int64)):
                raise TypeError(f'edge_weight must be a real tensor, got '
                                f'{getattr(weight, "dtype", type(weight))}')
            weight = weight.double().flatten()
        if isinstance(x, str):
            x = getattr(graph, x, None)
        if isinstance(pos, str):
            pos = getattr(graph, pos, None)
        edge_index = edge_index.cpu()
        if weight is not None:
            weight = weight.cpu()
        return (num_nodes, edge_index[0].long(), edge_index[1].long(), weight,
                x, pos, None)
    raise ValueError(f'expected a networkx graph or a PyG Data object, got '
                     f'{type(graph).__name__}')


def _weight(value: Any, u: Any, v: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f'edge ({u!r}, {v!r}) has a non-numeric weight '
                         f'{value!r}') from None


def _clean_edges(num_nodes: int, src: Tensor, dst: Tensor,
                 weight: Optional[Tensor]) -> sp.csr_matrix:
    r"""Symmetric weighted adjacency without self-loops; parallel edges (and an
    edge given in both directions) are merged by summing their weights."""
    if src.numel() and (int(torch.minimum(src, dst).min()) < 0 or
                        int(torch.maximum(src, dst).max()) >= num_nodes):
        bad = torch.cat([src, dst])
        bad = bad[(bad < 0) | (bad >= num_nodes)][0]
        raise ValueError(f'an edge refers to node {int(bad)}, but the graph '
                         f'has {num_nodes} nodes')
    if weight is None:
        weight = torch.ones(src.numel(), dtype=torch.float64)
    if weight.numel() != src.numel():
        raise ValueError(f'edge_weight has {weight.numel()} entries for '
                         f'{src.numel()} edges')
    if weight.numel() and not (bool(torch.isfinite(weight).all()) and
                               bool((weight > 0).all())):
        raise ValueError('edge weights must be finite and positive')
    keep = src != dst
    src, dst, weight = src[keep], dst[keep], weight[keep]
    rows = torch.cat([src, dst]).numpy()
    cols = torch.cat([dst, src]).numpy()
    values = torch.cat([weight, weight]).numpy()
    adjacency = sp.coo_matrix((values, (rows, cols)),
                              shape=(num_nodes, num_nodes)).tocsr()
    adjacency.sum_duplicates()
    return adjacency


def _locality_key(adjacency: sp.csr_matrix) -> Tensor:
    r"""Rank of every node in reverse Cuthill-McKee order (a breadth-first
    order that keeps neighbours close and walks one component at a time)."""
    order = reverse_cuthill_mckee(adjacency, symmetric_mode=True)
    key = np.empty(adjacency.shape[0], dtype=np.int64)
    key[order] = np.arange(adjacency.shape[0])
    return torch.from_numpy(key)


def _igraph():
    try:
        import igraph
    except ImportError:
        return None
    return igraph


def _louvain_levels(adjacency: sp.csr_matrix, resolution: float, seed: int,
                    progress: bool, engine: str = 'auto') -> list:
    r"""Louvain's nested partitions, finest first, as membership vectors."""
    coo = sp.triu(adjacency, k=1).tocoo()
    igraph = _igraph() if engine in ('auto', 'igraph') else None
    if engine == 'igraph' and igraph is None:
        raise ImportError("engine='igraph' needs python-igraph: pip install "
                          "'hsa-graph[graph]' (or pip install igraph)")
    if igraph is not None:
        import random
        graph = igraph.Graph(n=adjacency.shape[0],
                             edges=np.stack([coo.row, coo.col], 1))
        graph.es['weight'] = coo.data
        igraph.set_random_number_generator(random.Random(seed))
        try:
            levels = graph.community_multilevel(
                weights='weight', return_levels=True, resolution=resolution)
        finally:
            igraph.set_random_number_generator(random)
        return [torch.tensor(level.membership, dtype=torch.long)
                for level in levels]
    graph = nx.Graph()
    graph.add_nodes_from(range(adjacency.shape[0]))
    graph.add_weighted_edges_from(zip(coo.row.tolist(), coo.col.tolist(),
                                      coo.data.tolist()))
    levels = []
    partitions = nx.community.louvain_partitions(
        graph, weight='weight', resolution=resolution, seed=seed)
    for partition in tqdm(partitions, desc='louvain levels', disable=not progress):
        member = np.empty(adjacency.shape[0], dtype=np.int64)
        for community, nodes in enumerate(partition):
            member[list(nodes)] = community
        levels.append(torch.from_numpy(member))
    return levels


def _spectral_levels(adjacency: sp.csr_matrix, leaf_size: int, seed: int,
                     progress: bool) -> list:
    r"""Recursive spectral bisection: each cluster larger than
    :obj:`leaf_size` is split at the median of its Fiedler vector (the
    eigenvector of the second-smallest eigenvalue of the normalised
    Laplacian), after first separating its connected components."""
    import scipy.linalg
    from scipy.sparse.csgraph import connected_components, laplacian
    from scipy.sparse.linalg import eigsh

    num_nodes = adjacency.shape[0]
    rng = np.random.default_rng(seed)
    member = np.zeros(num_nodes, dtype=np.int64)
    levels = []
    clusters = [np.arange(num_nodes)]
    bar = tqdm(desc='spectral levels', disable=not progress)
    while any(c.size > leaf_size for c in clusters):
        next_clusters = []
        for nodes in clusters:
            if nodes.size <= leaf_size:
                next_clusters.append(nodes)
                continue
            sub = adjacency[nodes][:, nodes]
            count, label = connected_components(sub, directed=False)
            if count > 1:
                next_clusters.extend(nodes[label == c] for c in range(count))
                continue
            lap = laplacian(sub.astype(np.float64), normed=True)
            if nodes.size <= 150:  # dense, only the two smallest pairs
                _, vectors = scipy.linalg.eigh(lap.toarray(),
                                               subset_by_index=[0, 1])
            else:
                start = rng.standard_normal((nodes.size, 2))
                _, vectors = eigsh(lap, k=2, sigma=-1e-3, v0=start[:, 0])
            fiedler = vectors[:, 1]
            order = np.argsort(fiedler, kind='stable')
            half = nodes.size // 2
            next_clusters.extend([nodes[order[:half]], nodes[order[half:]]])
        clusters = next_clusters
        member = np.empty(num_nodes, dtype=np.int64)
        for cluster_id, nodes in enumerate(clusters):
            member[nodes] = cluster_id
        levels.append(torch.from_numpy(member))
        bar.update(1)
    bar.close()
    return levels[::-1]


def _tree_from_levels(levels: list, num_nodes: int, key: Tensor
                      ) -> Tuple[Tensor, Tensor]:
    r"""Parent vector (leaves, then communities level by level, root last)
    and the locality key of every node (the smallest key of its members)."""
    parent_parts, key_parts = [], [key]
    offset = num_nodes
    previous = torch.arange(num_nodes)
    for member in levels:
        num_communities = int(member.max()) + 1 if member.numel() else 0
        parent_of_previous = torch.full((int(previous.max()) + 1, ), -1,
                                        dtype=torch.long)
        parent_of_previous[previous] = offset + member
        parent_parts.append(parent_of_previous)
        key_parts.append(torch.full((num_communities, ), num_nodes,
                                    dtype=torch.long).scatter_reduce_(
            0, member, key, reduce='amin'))
        offset += num_communities
        previous = member
    root_parent = torch.full((int(previous.max()) + 1, ), offset,
                             dtype=torch.long)
    parent = torch.cat(parent_parts + [root_parent, torch.tensor([-1])])
    key_parts.append(torch.tensor([0]))
    return parent, torch.cat(key_parts)


def cluster_parent(adjacency: sp.csr_matrix, branching: int, leaf_size: int,
                   method: str, resolution: float = 1.0, seed: int = 0,
                   progress: bool = False, engine: str = 'auto') -> Tensor:
    r"""Parent vector of the community hierarchy of a symmetric adjacency
    matrix (leaves ``0 .. n-1`` are its rows). The building block of
    :func:`hierarchy_from_graph` and :func:`~hsa_graph.from_mesh`."""
    num_nodes = adjacency.shape[0]
    key = _locality_key(adjacency)
    if method == 'louvain':
        levels = _louvain_levels(adjacency, resolution, seed, progress,
                                 engine)
    elif method == 'spectral':
        levels = _spectral_levels(adjacency, leaf_size, seed, progress)
    else:
        raise ValueError(f'method must be one of {_METHODS}, got {method!r}')
    parent, node_key = _tree_from_levels(levels, num_nodes, key)
    num_old = parent.numel()
    parent = collapse_only_children(parent, num_nodes)
    if parent.numel() != num_old:  # keys follow the surviving nodes
        node_key = _surviving_keys(parent, num_nodes, key)
    return split_wide_families(parent, num_nodes, leaf_bound=leaf_size,
                               internal_bound=branching, child_key=node_key)


def _surviving_keys(parent: Tensor, num_leaves: int, leaf_key: Tensor) -> Tensor:
    # Smallest leaf key below every node: push leaf keys up until stable.
    node_key = torch.full((parent.numel(), ), num_leaves, dtype=torch.long)
    node_key[:num_leaves] = leaf_key
    frontier = torch.arange(num_leaves)
    while frontier.numel():
        up = parent[frontier]
        keep = up >= 0
        frontier, up = frontier[keep], up[keep]
        before = node_key[up].clone()
        node_key.scatter_reduce_(0, up, node_key[frontier], reduce='amin')
        changed = node_key[up] != before
        frontier = torch.unique(up[changed])
    return node_key


def hierarchy_from_graph(graph: Union[nx.Graph, Data], branching: int = 8,
                         leaf_size: Optional[int] = None,
                         method: str = 'louvain', resolution: float = 1.0,
                         seed: int = 0, x: Any = 'x', pos: Any = 'pos',
                         progress: bool = False,
                         engine: str = 'auto') -> Hierarchy:
    r"""Clusters a general graph recursively into a
    :class:`~hsa_graph.Hierarchy`: leaves are the graph's nodes, internal
    nodes are communities of connected nodes.

    * ``method='louvain'`` (default): one run of the Louvain method; its
      successive levels of aggregation are nested communities and become the
      tree's levels. It runs in python-igraph's C implementation
      (``community_multilevel``) when igraph is installed (``pip install
      'hsa-graph[graph]'``, ~15x faster) and in networkx
      (:func:`networkx.community.louvain_partitions`) otherwise; the two give
      different (equally valid) trees for the same seed.
    * ``method='spectral'``: recursive spectral bisection with scipy (split
      each cluster at the median of its Fiedler vector, after separating
      connected components). Slower: meant for graphs up to ~10^4 to 10^5
      nodes (see docs/converters.md).

    Communities with one member collapse, and a family with more than
    :obj:`branching` members (:obj:`leaf_size` for a family of leaves) is
    cut into balanced groups along a reverse Cuthill-McKee order, which
    keeps neighbours together. A disconnected graph is fine: communities never
    span components, and the root groups the components (isolated nodes
    included) in that order.

    Input cleanup (documented, never silent about counts): self-loops are
    ignored, edges are treated as undirected, and parallel edges are merged
    by summing their weights (``weight`` edge attribute in networkx,
    ``edge_weight`` in PyG). Every node becomes exactly one leaf: leaf ``i``
    is node ``i`` of ``list(G.nodes)`` (or of the PyG graph) and
    ``source_id[i] = i`` (``-1`` for communities).

    Args:
        graph (networkx.Graph or torch_geometric.data.Data): the graph.
        branching (int): most children of a node that has communities among
            its children. (default: :obj:`8`)
        leaf_size (int, optional): most leaves in a family made only of
            leaves (default: :obj:`branching`).
        method (str): ``'louvain'`` or ``'spectral'``.
            (default: ``'louvain'``)
        resolution (float): Louvain resolution; larger values give smaller
            communities. (default: :obj:`1.0`)
        seed (int): random seed, for reproducible trees. (default: :obj:`0`)
        x (Tensor or str, optional): ``[n, F]`` node features, or the name of
            a node attribute (networkx) / Data attribute (PyG).
            (default: ``'x'``, used when present)
        pos (Tensor or str, optional): ``[n, D]`` node coordinates, or an
            attribute name. When given, every node's ``pos`` is its position
            inside its parent's bounding box (as in
            :func:`~hsa_graph.from_point_cloud`) and ``centroid`` holds the
            absolute means; otherwise communities are unordered sets and
            ``pos`` is left unset. (default: ``'pos'``, used when present)
        progress (bool): show a progress bar over levels.
            (default: :obj:`False`)
        engine (str): Louvain implementation: ``'auto'`` (igraph when
            installed), ``'igraph'`` or ``'networkx'``. (default: ``'auto'``)

    Returns:
        A validated :class:`~hsa_graph.Hierarchy` with ``edge_index``,
        ``source_id`` and, when available, ``x``, ``pos``, ``centroid``; for a
        networkx input, ``source_node`` lists the original node keys of the
        leaves.

    Raises:
        ValueError: for an empty graph, edges to missing nodes, non-positive
            weights, features with the wrong number of rows, NaN/inf
            coordinates or a bad option.

    Shapes:
        - **input:** a graph with ``n`` nodes
        - **output:** a hierarchy with ``n`` leaves and ``N > n`` nodes.
    """
    branching = positive_int(branching, 'branching', minimum=2)
    leaf_size = branching if leaf_size is None else positive_int(
        leaf_size, 'leaf_size', minimum=2)
    if method not in _METHODS:
        raise ValueError(f'method must be one of {_METHODS}, got {method!r}')
    if engine not in _ENGINES:
        raise ValueError(f'engine must be one of {_ENGINES}, got {engine!r}')
    num_nodes, src, dst, weight, x, pos, nodes = _as_edges(graph, x, pos)
    if num_nodes == 0:
        raise ValueError('the graph is empty: a hierarchy needs at least one '
                         'node')
    x = check_features(x if not isinstance(x, str) else None, num_nodes)
    coords = None
    if pos is not None and not isinstance(pos, str):
        try:
            pos = torch.as_tensor(pos)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"'pos' must be a tensor or array of numbers, "
                            f'got {type(pos).__name__} ({error})') from None
        coords = check_coordinates(pos.reshape(-1, 1) if pos.dim() == 1
                                   else pos)
        if coords.size(0) != num_nodes:
            raise ValueError(f"'pos' has {coords.size(0)} rows for "
                             f'{num_nodes} nodes')
    adjacency = _clean_edges(num_nodes, src, dst, weight)
    parent = cluster_parent(adjacency, branching, leaf_size, method,
                            resolution, seed, progress, engine)
    extra = {} if nodes is None else {'source_node': nodes}
    h = assemble(parent, num_nodes, x=x, **extra)
    if coords is not None:
        h.pos, h.centroid = relative_positions(h, coords, num_nodes)
    return h
