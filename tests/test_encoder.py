import math
from unittest import mock

import pytest
import torch
from torch_geometric.data import Batch

import hsa_graph.nn.encoder as encoder_module
from hsa_graph import Hierarchy, tree_layout
from hsa_graph.convert import flatten_hierarchy, from_document
from hsa_graph.nn import (FamilyPositionEncoder, FourierPositionEncoder,
                          HierarchyClassifier, HSAEncoder, HSAEncoderLayer,
                          KeyPositionEncoder, leaf_mean_pool, pool_to_depth)

TEXTS = ['One two three. Four five.\n\nSix seven eight nine. Ten.',
         'Alpha beta. Gamma.',
         'A b c d e f. G h.\n\nI j k.\n\nL m n o p.']


def documents(dim=16, y=True):
    out = []
    for i, text in enumerate(TEXTS):
        h = from_document(text, num_hash_buckets=50)
        h.x = torch.randn(h.num_nodes, dim, generator=torch.Generator()
                          .manual_seed(i)).double()
        if y:
            h.y = torch.tensor([i % 2])
        out.append(h)
    return out


def encoder(dim=16, **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('families', [1, 1, 1])
    return HSAEncoder(dim, dim, num_layers=2, heads=4, dropout=0.0,
                      **kwargs).double()


def run(model, h):
    return model(h.x, h.edge_index, pos=h.pos, family_type=h.family_type)


def test_shapes_and_repr():
    model = encoder(in_channels := 16)
    batch = Batch.from_data_list(documents())
    out = run(model, batch)
    assert out.shape == (batch.num_nodes, 16)
    assert repr(model.layers[0]) == 'HSAEncoderLayer(16, heads=4)'
    assert repr(model) == 'HSAEncoder(16, 16, num_layers=2)'
    wide = HSAEncoder(in_channels, 32, heads=8, families=None).double()
    assert wide(batch.x, batch.edge_index).shape == (batch.num_nodes, 32)


def test_gradients_reach_every_parameter():
    model = encoder()
    batch = Batch.from_data_list(documents())
    x = batch.x.clone().requires_grad_()
    out = model(x, batch.edge_index, pos=batch.pos,
                family_type=batch.family_type)
    out[batch.is_leaf].pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    # Only leaf rows of the input matter: internal rows are never read.
    assert torch.equal(x.grad[~batch.is_leaf],
                       torch.zeros_like(x.grad[~batch.is_leaf]))
    assert x.grad[batch.is_leaf].abs().sum() > 0


def test_batching_invariance():
    model = encoder().eval()
    docs = documents()
    batch = Batch.from_data_list(docs)
    together = run(model, batch)
    alone = torch.cat([run(model, h) for h in docs])
    leaf = batch.is_leaf
    torch.testing.assert_close(together[leaf], alone[leaf])


def dense_layer_reference(layer, x, pos_embedding, include_self):
    # A post-norm transformer layer with plain softmax attention over all
    # leaves, written from scratch with the layer's weights.
    num, heads, d = x.size(0), layer.heads, layer.head_channels
    qkv = layer.qkv[0](x)
    q, k, v = qkv.split(layer.channels, -1)
    q = layer.query_norm(q.view(num, heads, d)).transpose(0, 1)   # (H, L, d)
    k = layer.key_norm(k.view(num, heads, d)).transpose(0, 1)
    v = v.view(num, heads, d).transpose(0, 1)
    p = layer.pos_proj(pos_embedding).view(num, heads, -1).transpose(0, 1)
    logits = q @ k.transpose(1, 2) / math.sqrt(d) + p @ p.transpose(1, 2)
    if not include_self:
        logits = logits - torch.diag(torch.full((num, ), math.inf,
                                                dtype=x.dtype))
    attended = (logits.softmax(-1) @ v).transpose(0, 1).reshape(num, -1)
    h = layer.attention_norm(x + layer.out_proj(attended))
    return layer.ffn_norm(h + layer.ffn(h))


@pytest.mark.parametrize('include_self', [True, False])
def test_flat_tree_is_exactly_softmax_attention(include_self):
    h = flatten_hierarchy(documents()[0])
    h.x = torch.randn(h.num_nodes, 16, dtype=torch.double)
    torch.manual_seed(1)
    layer = HSAEncoderLayer(16, heads=4, dropout=0.0, pos_channels=8,
                            include_self=include_self).double()
    positions = FamilyPositionEncoder(8, [1, 1, 1]).double()
    pos_embedding = positions(h.pos.double(), h.family_type)
    out = layer(h.x, h.edge_index, pos_embedding)
    leaf = h.is_leaf
    expected = dense_layer_reference(layer, h.x[leaf], pos_embedding[leaf],
                                     include_self)
    torch.testing.assert_close(out[leaf], expected, rtol=1e-10, atol=1e-10)


def test_hsa_and_flat_share_code_and_parameters():
    docs = documents()
    emb = torch.nn.Embedding(50, 16)
    models = [HierarchyClassifier(encoder(), 2, emb).double() for _ in '12']
    counts = {sum(p.numel() for p in m.parameters()) for m in models}
    assert len(counts) == 1
    hsa = models[0](Batch.from_data_list(docs))
    flat = models[0](Batch.from_data_list([flatten_hierarchy(h)
                                            for h in docs]))
    assert hsa.shape == flat.shape == (3, 2)
    # Different trees over the same tokens give different predictions.
    assert not torch.allclose(hsa, flat)


def test_hierarchy_differs_from_flat_only_through_structure():
    # A document of one sentence is a one-level tree below its sentence:
    # HSA on it equals the flat model (positions aside), so disable them.
    h = from_document('a b c d e', levels=('token', ), num_hash_buckets=50)
    h.x = torch.randn(h.num_nodes, 16, dtype=torch.double)
    model = encoder(families=None)
    torch.testing.assert_close(
        model(h.x, h.edge_index)[h.is_leaf],
        model(h.x, flatten_hierarchy(h).edge_index)[h.is_leaf])


def test_node_types_select_their_projection():
    torch.manual_seed(0)
    h = documents()[0]
    two = HSAEncoderLayer(16, heads=2, num_node_types=2, dropout=0.0).double()
    one = HSAEncoderLayer(16, heads=2, dropout=0.0).double()
    one.load_state_dict({k.replace('qkv.1', 'qkv.0'): v
                         for k, v in two.state_dict().items()
                         if not k.startswith('qkv.0')})
    all_type_1 = torch.ones(h.num_nodes, dtype=torch.long)
    torch.testing.assert_close(two(h.x, h.edge_index, node_type=all_type_1),
                               one(h.x, h.edge_index))
    mixed = torch.arange(h.num_nodes) % 2
    assert not torch.allclose(two(h.x, h.edge_index, node_type=mixed),
                              one(h.x, h.edge_index))
    with pytest.raises(ValueError, match='node types'):
        two(h.x, h.edge_index, node_type=mixed + 1)
    with pytest.raises(ValueError, match='node_type is required'):
        two(h.x, h.edge_index)


def test_eager_per_type_rows_match_the_compile_path(monkeypatch):
    # Eager projects each type's rows only; under torch.compile every row is
    # projected by every type and masked. Both must give the same numbers.
    torch.manual_seed(0)
    h = documents()[0]
    layer = HSAEncoderLayer(16, heads=2, num_node_types=3, dropout=0.0).double()
    node_type = torch.randint(0, 3, (h.num_nodes, ))
    node_type[:2] = torch.tensor([0, 2])
    x = h.x.double().requires_grad_()
    eager = layer(x, h.edge_index, node_type=node_type)
    (eager_grad, ) = torch.autograd.grad(eager.square().sum(), x)
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    masked = layer(x, h.edge_index, node_type=node_type)
    (masked_grad, ) = torch.autograd.grad(masked.square().sum(), x)
    torch.testing.assert_close(eager, masked)
    torch.testing.assert_close(eager_grad, masked_grad)


def count_nonzero_calls(monkeypatch):
    # Each nonzero() waits for the device: count both spellings.
    calls = []
    method, function = torch.Tensor.nonzero, torch.nonzero

    def counted(call):
        def wrapper(*args, **kwargs):
            calls.append(1)
            return call(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(torch.Tensor, 'nonzero', counted(method))
    monkeypatch.setattr(torch, 'nonzero', counted(function))
    return calls


def three_layer_two_type_encoder():
    r"""A document, a 3-layer encoder with 2 node types, the types and the
    layout (passed, so that tree_layout's own calls are not counted)."""
    torch.manual_seed(0)
    h = documents()[0]
    model = HSAEncoder(16, 16, num_layers=3, heads=2, dropout=0.0,
                       num_node_types=2, families=None).double()
    node_type = torch.arange(h.num_nodes) % 2
    layout = tree_layout(h.edge_index, h.num_nodes)
    return h, model, node_type, layout


def test_node_type_rows_are_found_once_per_encoder_forward(monkeypatch):
    h, model, node_type, layout = three_layer_two_type_encoder()
    calls = count_nonzero_calls(monkeypatch)
    model(h.x, h.edge_index, node_type=node_type, layout=layout)
    assert len(calls) == 2          # once per node type, not per layer
    # A layer called on its own finds its rows itself, unless given them.
    layer = model.layers[0]
    calls.clear()
    layer(h.x, layout=layout, node_type=node_type)
    assert len(calls) == 2
    rows = [(node_type == t).nonzero().flatten() for t in range(2)]
    calls.clear()
    layer(h.x, layout=layout, node_type=node_type, node_rows=rows)
    assert len(calls) == 0


def test_precomputed_node_rows_give_the_same_output():
    torch.manual_seed(0)
    h = documents()[0]
    model = HSAEncoder(16, 16, num_layers=3, heads=2, dropout=0.0,
                       num_node_types=3, families=None).double()
    node_type = torch.randint(0, 3, (h.num_nodes, ))
    rows = [(node_type == t).nonzero().flatten() for t in range(3)]
    layer = model.layers[0]
    torch.testing.assert_close(
        layer(h.x, h.edge_index, node_type=node_type, node_rows=rows),
        layer(h.x, h.edge_index, node_type=node_type))
    # The encoder's shared rows give what each layer finds on its own.
    x = h.x
    for each in model.layers:
        x = each(x, h.edge_index, node_type=node_type)
    torch.testing.assert_close(
        model(h.x, h.edge_index, node_type=node_type), x)
    with pytest.raises(ValueError, match='node_rows must hold 3'):
        layer(h.x, h.edge_index, node_type=node_type, node_rows=rows[:2])


def count_range_reads(monkeypatch, tensor):
    # node_type.min() / .max() each wait on the device (int() of the result
    # syncs on CUDA): count the reads of this tensor's values.
    calls = []
    for name in ('min', 'max'):
        method = getattr(torch.Tensor, name)

        def wrapper(self, *args, _method=method, _name=name, **kwargs):
            if self is tensor:
                calls.append(_name)
            return _method(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_node_type_is_checked_once_per_encoder_forward(monkeypatch):
    h, model, node_type, layout = three_layer_two_type_encoder()
    reads = count_range_reads(monkeypatch, node_type)
    with mock.patch.object(encoder_module, '_check_node_type',
                           wraps=encoder_module._check_node_type) as check:
        model(h.x, h.edge_index, node_type=node_type, layout=layout)
        assert check.call_count == 1            # not once per layer
        assert sorted(reads) == ['max', 'min']
        # A layer called on its own still checks, with or without rows.
        layer = model.layers[0]
        rows = [(node_type == t).nonzero().flatten() for t in range(2)]
        for kwargs in ({}, {'node_rows': rows}):
            check.reset_mock()
            reads.clear()
            layer(h.x, layout=layout, node_type=node_type, **kwargs)
            assert check.call_count == 1
            assert sorted(reads) == ['max', 'min']
        check.reset_mock()
        reads.clear()
        layer(h.x, layout=layout, node_type=node_type, node_rows=rows,
              check_node_type=False)
        assert check.call_count == 0 and reads == []
    # Skipping the check changes nothing else.
    torch.testing.assert_close(
        layer(h.x, layout=layout, node_type=node_type, node_rows=rows,
              check_node_type=False),
        layer(h.x, layout=layout, node_type=node_type))
    # One node type: still one check per encoder forward.
    one = HSAEncoder(16, 16, num_layers=3, heads=2, dropout=0.0,
                     families=None).double()
    zeros = torch.zeros(h.num_nodes, dtype=torch.long)
    with mock.patch.object(encoder_module, '_check_node_type',
                           wraps=encoder_module._check_node_type) as check:
        one(h.x, h.edge_index, node_type=zeros, layout=layout)
        one(h.x, h.edge_index, layout=layout)
        assert check.call_count == 2


def test_bad_node_type_raises_from_encoder_and_layer():
    torch.manual_seed(0)
    h = documents()[0]
    model = HSAEncoder(16, 16, num_layers=3, heads=2, dropout=0.0,
                       num_node_types=2, families=None).double()
    layer = model.layers[0]
    node_type = torch.arange(h.num_nodes) % 2
    rows = [(node_type == t).nonzero().flatten() for t in range(2)]
    message = (r'^node_type holds values in \[{}, {}\] but the layer has 2 '
               r'node types$')
    for bad, low, high in ((node_type + 1, 1, 2), (node_type - 1, -1, 0)):
        with pytest.raises(ValueError, match=message.format(low, high)):
            model(h.x, h.edge_index, node_type=bad)
        with pytest.raises(ValueError, match=message.format(low, high)):
            layer(h.x, h.edge_index, node_type=bad)
        with pytest.raises(ValueError, match=message.format(low, high)):
            layer(h.x, h.edge_index, node_type=bad, node_rows=rows)
    for call in (lambda t: model(h.x, h.edge_index, node_type=t),
                 lambda t: layer(h.x, h.edge_index, node_type=t)):
        with pytest.raises(ValueError, match='node_type is required with 2'):
            call(None)
        with pytest.raises(ValueError, match=r'node_type must be \[N\]'):
            call(node_type[:-1])


def test_layout_is_computed_once_and_can_be_passed():
    model = encoder()
    h = Batch.from_data_list(documents())
    layout = tree_layout(h.edge_index, h.num_nodes)
    torch.testing.assert_close(
        model(h.x, h.edge_index, h.pos, h.family_type, layout=layout),
        run(model, h))


@pytest.mark.parametrize('build,message', [
    (lambda: HSAEncoderLayer(10, heads=4), 'divisible'),
    (lambda: HSAEncoder(8, 8, num_layers=0), 'num_layers'),
    (lambda: FourierPositionEncoder(0, 4), 'dim'),
    (lambda: KeyPositionEncoder(0, 4), 'num_keys'),
    (lambda: FamilyPositionEncoder(4, ['bad']), 'Unknown family'),
])
def test_bad_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_forward_input():
    model = encoder()
    h = documents()[0]
    with pytest.raises(ValueError, match='x must be'):
        model(h.x[:, :8], h.edge_index, h.pos, h.family_type)
    with pytest.raises(ValueError, match='pass pos'):
        model(h.x, h.edge_index)
    with pytest.raises(ValueError, match='family types exist'):
        model(h.x, h.edge_index, h.pos, h.family_type + 3)


# -- positions ----------------------------------------------------------------


def test_family_position_encoder_routes_rows_by_type():
    torch.manual_seed(0)
    # Columns 0-2: a one-hot key (as compose_hierarchies writes it);
    # columns 3-4: the parts' own positions.
    enc = FamilyPositionEncoder(6, [('key', 3), ('fourier', 1, 3),
                                    ('fourier', 2, 3), None])
    pos = torch.tensor([[0., 0., 0., 0., 0.], [0., 1., 0., 0., 0.],
                        [0., 0., 0., 3., 1.], [0., 0., 0., 1., 2.],
                        [0., 0., 0., 5., 5.], [0., 0., 1., 0., 0.]])
    family_type = torch.tensor([-1, 0, 1, 2, 3, 0])
    out = enc(pos, family_type)
    assert torch.equal(out[0], torch.zeros(6))       # root: no position
    assert torch.equal(out[4], torch.zeros(6))       # unordered set
    torch.testing.assert_close(out[1], enc.encoders[0].lin.weight[:, 1])
    torch.testing.assert_close(out[5], enc.encoders[0].lin.weight[:, 2])
    torch.testing.assert_close(out[2], enc.encoders[1](pos)[2])
    torch.testing.assert_close(out[3], enc.encoders[2](pos)[3])
    # 1-D features ignore the second coordinate; 2-D ones do not.
    drop_last = torch.tensor([1., 1., 1., 1., 0.])
    assert torch.allclose(enc.encoders[1](pos[[2]]),
                          enc.encoders[1](pos[[2]] * drop_last))
    assert not torch.allclose(enc.encoders[2](pos[[3]]),
                              enc.encoders[2](pos[[3]] * drop_last))
    assert 'families=' in repr(enc)
    with pytest.raises(ValueError, match='coordinates'):
        enc(pos[:, :4], family_type)


def test_fourier_features_separate_nearby_and_far_positions():
    enc = FourierPositionEncoder(1, 8, max_period=1024.0)
    angles = enc.angular_frequency
    assert torch.isclose(angles.max(), torch.tensor(math.pi))
    assert torch.isclose(angles.min(), torch.tensor(2 * math.pi / 1024))


# -- pooling ------------------------------------------------------------------


def test_leaf_mean_pool_and_pool_to_depth():
    docs = documents()
    batch = Batch.from_data_list(docs)
    layout = tree_layout(batch.edge_index, batch.num_nodes)
    pooled = leaf_mean_pool(batch.x, layout, batch.batch, 3)
    for i, h in enumerate(docs):
        torch.testing.assert_close(pooled[i], h.x[h.is_leaf].mean(0))
    sentences, node_id, node_batch = pool_to_depth(batch.x, layout, 2,
                                                   batch.batch)
    assert bool((batch.depth[node_id] == 2).all())
    assert node_batch.tolist() == [0] * 4 + [1] * 2 + [2] * 4
    first = node_id[0]
    children = (batch.parent == first).nonzero().flatten()
    torch.testing.assert_close(sentences[0], batch.x[children].mean(0))
    roots, _, _ = pool_to_depth(batch.x, layout, 0, batch.batch)
    torch.testing.assert_close(roots, pooled)
    # Leaves shallower than the target depth are kept as themselves.
    h = Hierarchy.from_parent([-1, 0, 0, 2, 2], x=torch.eye(5))
    out, ids, _ = pool_to_depth(h.x, h.layout, 2)
    assert ids.tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match='depth'):
        pool_to_depth(h.x, h.layout, -1)


def test_classifier_pool_depth_and_token_embedding():
    docs = documents()
    emb = torch.nn.Embedding(50, 16)
    model = HierarchyClassifier(encoder(), 2, emb, pool_depth=2).double()
    batch = Batch.from_data_list(docs)
    assert model(batch).shape == (3, 2)
    with pytest.raises(ValueError, match='no x'):
        HierarchyClassifier(encoder(), 2)(Hierarchy.from_parent([-1, 0]))


def test_encoder_rejects_positions_it_would_drop():
    from hsa_graph.nn.positional import FamilyPositionEncoder
    encoder = FamilyPositionEncoder(8, families=(1, ))
    with pytest.raises(ValueError, match='coordinates'):
        encoder(torch.randn(5, 3))          # columns 1, 2 were ignored
    assert encoder(torch.randn(5, 1)).shape == (5, 8)
