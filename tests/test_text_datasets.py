import os
import os.path as osp
import shutil

import pytest
import torch
from torch_geometric.loader import DataLoader

from hsa_graph import Hierarchy
from hsa_graph.convert import flatten_hierarchy
from hsa_graph.datasets import (IMDB, AmazonElec, ClothingReviews,
                                TwentyNewsgroups)
from hsa_graph.datasets.text import default_data_root
from hsa_graph.nn import HierarchyClassifier, HSAEncoder

SAMPLES = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'datasets', 'samples', 'text')


@pytest.fixture
def sample_root(tmp_path):
    for name in ('imdb', 'amazon_elec'):
        shutil.copytree(osp.join(SAMPLES, name), tmp_path / name)
    return str(tmp_path)


def test_imdb_sample(sample_root):
    train = IMDB(sample_root, 'train', log=False)
    test = IMDB(sample_root, 'test', log=False)
    assert len(train) == 52 and len(test) == 28
    assert train.y.tolist() == [0] * 26 + [1] * 26
    assert train.num_classes == 2 and train.num_tokens == len(train.vocab)
    h = train[0]
    assert isinstance(h, Hierarchy) and h.validate()
    # <br /><br /> starts a new paragraph.
    assert any(int((d.depth == 1).sum()) == 2 for d in train)
    # Test tokens use the training vocabulary (unknown words -> <unk>).
    assert int(test.token_id.max()) < train.num_tokens
    assert 'word_paragraph-sentence-token_text_max512' in repr(train)


def test_amazon_elec_sample(sample_root):
    train = AmazonElec(sample_root, 'train', log=False)
    test = AmazonElec(sample_root, 'test', log=False)
    assert len(train) == 16 and len(test) == 8
    assert train.y.tolist() == [1, 0] * 8
    with pytest.raises(ValueError, match='size'):
        AmazonElec(sample_root, size='3k')


def test_settings_get_their_own_processed_folder(sample_root):
    a = IMDB(sample_root, 'train', max_tokens=8, log=False)
    b = IMDB(sample_root, 'train', window=(2, 4), max_docs=6, log=False)
    assert a.processed_dir != b.processed_dir
    assert len(b) == 6 and int(a.num_nodes) < int(
        IMDB(sample_root, 'train', log=False).num_nodes)
    assert int(b[0].child_count[b[0].depth == 2].max()) <= 4
    with pytest.raises(ValueError, match='split'):
        IMDB(sample_root, 'valid')
    with pytest.raises(ValueError, match='max_docs'):
        IMDB(sample_root, max_docs={'train': 3})


def test_smoke_training_beats_chance(sample_root):
    # HSA and its flat baseline both learn the hand-written reviews well
    # enough to beat chance on the held-out ones.
    torch.manual_seed(0)
    train = IMDB(sample_root, 'train', log=False)
    test = IMDB(sample_root, 'test', log=False)
    for flat in (False, True):
        torch.manual_seed(0)
        prepare = flatten_hierarchy if flat else (lambda h: h)
        train_items = [prepare(h) for h in train]
        test_items = [prepare(h) for h in test]
        model = HierarchyClassifier(
            HSAEncoder(16, 16, heads=2, families=[1, 1, 1], dropout=0.0), 2,
            torch.nn.Embedding(train.num_tokens, 16), dropout=0.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2,
                                      weight_decay=0.01)
        loader = DataLoader(train_items, batch_size=10, shuffle=True)
        for _ in range(6):
            for batch in loader:
                loss = torch.nn.functional.cross_entropy(model(batch),
                                                         batch.y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        batch = next(iter(DataLoader(test_items, batch_size=len(test))))
        accuracy = (model(batch).argmax(-1) == batch.y).float().mean()
        assert accuracy >= 0.75, (flat, float(accuracy))


def _link_raw(tmp_path, name):
    raw = osp.join(default_data_root(), name, 'raw')
    if not osp.isdir(raw) or not os.listdir(raw):
        pytest.skip(f'{name} not installed (run datasets/fetch_text.sh)')
    os.makedirs(tmp_path / name)
    os.symlink(osp.abspath(raw), tmp_path / name / 'raw')
    return str(tmp_path)


def test_twenty_newsgroups_real(tmp_path):
    root = _link_raw(tmp_path, '20newsgroups')
    train = TwentyNewsgroups(root, 'train', max_docs={'train': 300,
                                                       'test': 100},
                             max_tokens=256, log=False)
    test = TwentyNewsgroups(root, 'test', max_docs={'train': 300,
                                                     'test': 100},
                            max_tokens=256, log=False)
    assert len(train) == 300 and len(test) == 100
    assert train.num_classes == 20 and 0 <= int(train.y.min())
    assert int(train.y.max()) < 20
    h = train[0]
    assert int(h.child_count[h.depth == 2].max()) <= 32
    assert h.num_leaves == min(int(h.num_tokens), 256)


def test_clothing_reviews_real(tmp_path):
    pytest.importorskip('pyarrow')
    root = _link_raw(tmp_path, 'clothing_reviews')
    test = ClothingReviews(root, 'test', max_docs={'train': 100,
                                                    'test': 300},
                           log=False)
    assert len(test) == 300
    # Stratified 80/20 split of the 19,818 reviews rated 1, 2, 4 or 5.
    labels = torch.tensor([y for _, y in test.read_split('test')])
    assert labels.numel() == 3964
    assert abs(float(labels.float().mean()) - 0.88) < 0.01
    h = test[0]
    assert h.validate() and h.height == 3
