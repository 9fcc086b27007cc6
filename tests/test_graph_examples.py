import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from hsa_graph.datasets import CoraLINQS
from hsa_graph.loader import DataLoader
from hsa_graph.transforms import AddHierarchy

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
REAL = osp.join(os.environ.get('HSA_DATA', osp.join(ROOT, 'data')), 'cora')
HAS_REAL = osp.exists(osp.join(REAL, 'raw', 'cora_nodes.parquet.gzip'))


def write_tiny_cora(root):
    pa = pytest.importorskip('pyarrow')
    parquet = pytest.importorskip('pyarrow.parquet')
    os.makedirs(osp.join(root, 'raw'))
    nodes = pa.table({'nodeId': [30, 10, 20, 40], 'labels': ['Paper'] * 4,
                      'subject': [2, 0, 1, 1],
                      'features': [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]})
    rels = pa.table({'sourceNodeId': [10, 20, 40],
                     'targetNodeId': [20, 30, 30],
                     'relationshipType': ['CITES'] * 3})
    parquet.write_table(nodes, osp.join(root, 'raw', 'cora_nodes.parquet.gzip'))
    parquet.write_table(rels, osp.join(root, 'raw', 'cora_rels.parquet.gzip'))


def test_reads_linqs_parquet_files(tmp_path):
    write_tiny_cora(str(tmp_path))
    data = CoraLINQS(str(tmp_path))[0]
    assert data.num_nodes == 4 and data.x.shape == (4, 3)
    assert data.y.tolist() == [2, 0, 1, 1]           # file order is kept
    # citations by node id, made undirected: 10-20, 20-30, 40-30
    edges = {tuple(e) for e in data.edge_index.t().tolist()}
    assert edges == {(1, 2), (2, 1), (2, 0), (0, 2), (3, 0), (0, 3)}
    with_tree = CoraLINQS(str(tmp_path), pre_transform=AddHierarchy())[0]
    assert torch.equal(with_tree.hierarchy.node_index, torch.arange(4))


def test_missing_files_say_how_to_fetch_them(tmp_path):
    with pytest.raises(FileNotFoundError, match='fetch_graphs.sh'):
        CoraLINQS(str(tmp_path))


@pytest.mark.data
@pytest.mark.skipif(not HAS_REAL, reason='run datasets/fetch_graphs.sh')
def test_real_cora_and_its_tree():
    data = CoraLINQS(REAL)[0]
    assert data.num_nodes == 2708 and data.num_edges == 10556
    assert data.x.shape == (2708, 1433)
    assert data.y.bincount().tolist() == [818, 180, 217, 426, 351, 418, 298]
    tree = AddHierarchy(branching=8)(data.clone()).hierarchy
    assert tree.is_leaf[:2708].all() and tree.layout.num_trees == 1
    batch = next(iter(DataLoader([AddHierarchy()(data.clone())])))
    assert batch.hierarchy.layout.num_nodes == batch.hierarchy.num_nodes


@pytest.mark.data
@pytest.mark.skipif(not HAS_REAL, reason='run datasets/fetch_graphs.sh')
def test_node_classification_example_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'examples', 'node_classification.py'),
         '--seeds', '1', '--epochs', '2', '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, 'HSA_DATA': osp.dirname(REAL)})
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith('hsa acc=0.') and ' gcn acc=' in last and \
        ' gps acc=' in last


MOLECULES = osp.join(osp.dirname(REAL), 'moleculeace', 'raw',
                     'CHEMBL1862_Ki.csv')


@pytest.mark.data
@pytest.mark.skipif(not osp.exists(MOLECULES),
                    reason='run datasets/fetch_graphs.sh')
def test_graph_regression_example_runs(tmp_path):
    pytest.importorskip('rdkit')
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'examples', 'graph_regression.py'),
         '--seeds', '1', '--epochs', '1', '--models', 'gine', 'hsa', 'gps',
         '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, 'HSA_DATA': osp.dirname(REAL)})
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith('hsa rmse=') and ' gine rmse=' in last
