r"""Multi-modal hierarchies (shape octree + icon quad-tree + name words under a
keyed root), the model of examples/multimodal_classification.py, and dropping
a modality at test time."""
import os.path as osp
import sys

import pytest
import torch
from torch_geometric.data import Batch

from hsa_graph import hsa_attention_matrix

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..',
                            'examples'))
import multimodal_classification as mm  # noqa: E402

NUM_POINTS = 40


def _parts(seed=0, words=(3, 1)):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(NUM_POINTS, 3, generator=generator) * 2 - 1
    icon = torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8,
                         generator=generator)
    return mm.item_parts(pos, icon, torch.tensor(words), leaf_size=8)


def test_composed_item_structure():
    parts = _parts()
    h = mm.compose_item(parts, torch.tensor([4]))
    h.validate()
    layout = h.layout
    root = int((layout.parent < 0).nonzero())
    children = h.edge_index[0][h.edge_index[1] == root]
    # Keyed root with one child per modality.
    assert children.numel() == 3
    assert sorted(h.pos[children, 0].tolist()) == [0.0, 1.0, 2.0]
    assert bool((h.family_type[children] == 0).all())
    assert int(h.family_type[root]) == -1
    # Leaves: every point, every patch (8 x 8), every word.
    leaf_type = h.node_type[layout.is_leaf]
    assert int((leaf_type == 0).sum()) == NUM_POINTS
    assert int((leaf_type == 1).sum()) == 64
    assert int((leaf_type == 2).sum()) == 2
    assert h.num_leaves == NUM_POINTS + 64 + 2
    # Word leaves carry token ids, others -1; patch leaves carry pixels.
    assert sorted(h.token_id[layout.is_leaf & (h.node_type == 2)].tolist()) \
        == [1, 3]
    assert bool((h.token_id[h.node_type != 2] == -1).all())
    assert h.x.shape[1] == mm.PATCH_DIM
    # Family types inside parts: octree 1, quad-tree 2, words 3.
    inner = (h.family_type > 0)
    assert torch.equal(h.family_type[inner], 1 + h.node_type[inner])


@pytest.mark.parametrize('dropped', mm.MODALITIES)
def test_dropping_a_modality_keeps_ids_stable(dropped):
    parts = _parts()
    kept = {k: v for k, v in parts.items() if k != dropped}
    h = mm.compose_item(kept, torch.tensor([0]))
    layout = h.layout
    root = int((layout.parent < 0).nonzero())
    children = h.edge_index[0][h.edge_index[1] == root]
    assert children.numel() == 2
    present = {mm.MODALITIES.index(k) for k in kept}
    # Key positions and node types are the global modality ids.
    assert set(h.pos[children, 0].long().tolist()) == present
    assert set(h.node_type[layout.is_leaf].tolist()) == present


def test_attention_crosses_modalities():
    h = mm.compose_item(_parts(), torch.tensor([0]))
    torch.manual_seed(0)
    q = torch.randn(h.num_nodes, 1, 8)
    k = torch.randn(h.num_nodes, 1, 8)
    theta = hsa_attention_matrix(q, k, h.edge_index,
                                 num_nodes=h.num_nodes)[0]
    leaves = h.layout.is_leaf
    rows = theta[leaves][:, leaves]
    assert torch.allclose(rows.sum(1), torch.ones(rows.size(0)), atol=1e-5)
    leaf_type = h.node_type[leaves]
    word = (leaf_type == 2).nonzero()[0, 0]
    # A word attends to the shape and the icon too (one block each).
    assert float(rows[word, leaf_type == 0].sum()) > 0
    assert float(rows[word, leaf_type == 1].sum()) > 0
    # Block constancy: every point of the shape gets the same weight.
    shape_weights = rows[word, leaf_type == 0]
    assert torch.allclose(shape_weights, shape_weights[0].expand_as(
        shape_weights))


@pytest.mark.parametrize('model_class', [mm.HSAMultimodal, mm.LateFusion])
def test_models_handle_missing_modalities(model_class):
    torch.manual_seed(0)
    model = model_class(16, 1, 2, num_classes=10, dropout=0.0, vocab_size=5)
    model.eval()
    full = [mm.compose_item(_parts(s), torch.tensor([s])) for s in range(3)]
    out = model(Batch.from_data_list(full))
    assert out.shape == (3, 10) and bool(torch.isfinite(out).all())
    # A batch mixing items with different missing children.
    mixed = []
    for s, dropped in enumerate(mm.MODALITIES):
        parts = {k: v for k, v in _parts(s).items() if k != dropped}
        mixed.append(mm.compose_item(parts, torch.tensor([s])))
    out_mixed = model(Batch.from_data_list(mixed))
    assert out_mixed.shape == (3, 10)
    assert bool(torch.isfinite(out_mixed).all())
    assert not torch.allclose(out_mixed, out)
    # Each tree is independent of the others in its batch.
    alone = model(Batch.from_data_list(mixed[1:2]))
    assert torch.allclose(alone, out_mixed[1:2], atol=1e-5)


def test_per_modality_projections_are_used():
    torch.manual_seed(0)
    model = mm.HSAMultimodal(16, 1, 2, num_classes=4, dropout=0.0,
                             vocab_size=5)
    batch = Batch.from_data_list([mm.compose_item(_parts(),
                                                  torch.tensor([1]))])
    model(batch).sum().backward()
    layer = model.encoder.layers[0]
    for lin in layer.qkv:          # one Q/K/V projection per modality
        assert float(lin.weight.grad.abs().sum()) > 0
    for module in (model.embed.shape, model.embed.icon, model.embed.name):
        assert float(module.weight.grad.abs().sum()) > 0


def test_vocabulary():
    vocab = mm.Vocabulary(['bar <mask>', 'ford focus', '<mask>'])
    assert vocab.words[0] == '<unk>'
    assert vocab.encode('bar unknown').tolist() == [vocab.ids['bar'], 0]
    assert vocab.encode('').tolist() == [0]   # an empty name keeps one leaf


def test_modality_dropout_choice():
    items = [{'pos': torch.rand(NUM_POINTS, 3,
                                generator=torch.Generator().manual_seed(i)),
              'icon': torch.zeros(3, 128, 128, dtype=torch.uint8),
              'token_id': torch.tensor([i % 3 + 1]), 'y': torch.tensor([i])}
             for i in range(8)]
    complete = mm.build_set(items, mm.MODALITIES, 8, 'complete')
    partial = [mm.build_set(items, kept, 8, 'partial')
               for kept in mm.without_each()]

    def choose(p, seed=0, epoch=0):
        return mm.modality_dropout(complete, partial, p, seed, epoch)

    assert all(a is b for a, b in zip(choose(0.0), complete))
    dropped = choose(1.0)
    assert not any(a is b for a, b in zip(dropped, complete))
    for i, h in enumerate(dropped):
        # One of the item's own two-modality hierarchies: same label, two
        # keyed children.
        assert any(h is versions[i] for versions in partial)
        assert int(h.y) == int(complete[i].y) == i
        h.validate()
        assert len(set(h.node_type[h.layout.is_leaf].tolist())) == 2
    # Deterministic for a fixed seed and epoch; seed and epoch both matter.
    def ids(*args):
        return [id(h) for h in choose(*args)]

    assert ids(0.5, 3, 7) == ids(0.5, 3, 7)
    assert ids(0.5, 3, 7) != ids(0.5, 3, 8)
    assert ids(0.5, 3, 7) != ids(0.5, 4, 7)
