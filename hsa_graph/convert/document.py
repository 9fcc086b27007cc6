r"""Documents to hierarchies: document -> paragraphs -> sentences -> tokens.

The leaves are the document's tokens, in reading order, and carry their
vocabulary ids in ``token_id``. Internal nodes are text units (paragraphs,
sentences, or fixed windows of them for text without structure). Every node's
``pos`` is its index among its siblings, and ``family_type`` says which kind of
family it belongs to (see :data:`DOCUMENT_LEVELS`), so a position encoder can
embed sentence indices and token indices with separate maps.
"""
from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from typing import (Any, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from ..hierarchy import Hierarchy
from ._common import positive_int

__all__ = ['DOCUMENT_LEVELS', 'Vocabulary', 'split_paragraphs',
           'split_sentences', 'word_tokenize', 'from_document',
           'flatten_hierarchy', 'DocumentToHierarchy']

#: The kinds of text unit a document hierarchy can have, outermost first. A
#: node's ``family_type`` is the index of its own level in this tuple (so
#: ``2`` marks tokens), whichever subset of levels a hierarchy uses, and ``-1``
#: marks the root (which has no family).
DOCUMENT_LEVELS = ('paragraph', 'sentence', 'token')

Span = Tuple[int, int]

#: :func:`from_document`'s default bound on the tokens of one sentence node
#: (longer sentences are cut into a balanced subtree of windows).
MAX_SENTENCE_TOKENS = 128

# --------------------------------------------------------------------------
# Splitting and tokenising
# --------------------------------------------------------------------------

_BLANK_LINE = re.compile(r'\n[ \t\r\f\v]*\n\s*')

# Words that end with a period but almost never end a sentence.
_ABBREVIATIONS = frozenset('''
    mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al approx dept est fig
    figs no nos vol vols ed eds gen gov lt col sgt capt rev hon pres jan feb
    mar apr jun jul aug sep sept oct nov dec inc corp ltd co bros u.s u.k
    a.m p.m ph.d
'''.split()) - {'etc', 'inc', 'corp', 'ltd', 'co'}
# 'etc.', 'Inc.' and friends may end a sentence; they are split only when the
# next word starts with an upper-case letter (the general rule below).

# A sentence ends at . ! ? (possibly repeated, e.g. '?!' or '...'), followed by
# closing quotes or brackets, then white space.
_TERMINATOR = re.compile(r'[.!?]+[\'"\u2019\u201d)\]]*(?=\s)')
_OPENER = re.compile(r'\s+[\'"\u2018\u201c(\[]*([A-Z0-9\u00C0-\u024F])')

_WORD = re.compile(r"[^\W_]+(?:['\u2019.,\-][^\W_]+)*|[^\w\s]", re.UNICODE)


def split_paragraphs(text: str) -> List[Span]:
    r"""Splits :obj:`text` into paragraphs at blank lines.

    Args:
        text (str): the document.

    Returns:
        list of ``(start, end)`` character spans of the non-empty paragraphs,
        stripped of surrounding white space.
    """
    spans, start = [], 0
    for match in _BLANK_LINE.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return [s for s in (_strip_span(text, a, b) for a, b in spans) if s]


def split_sentences(text: str, start: int = 0,
                    end: Optional[int] = None) -> List[Span]:
    r"""Splits ``text[start:end]`` into sentences.

    A sentence ends at ``.``, ``!`` or ``?`` (possibly repeated, and followed
    by closing quotes or brackets) when white space and an upper-case letter
    or digit (possibly after an opening quote) follow. It does not end after a
    known abbreviation (``Dr.``, ``e.g.``, ``U.S.``...) or a single-letter
    initial (``J. Smith``); decimals (``3.14``) and quoted questions followed
    by a lower-case word (``"Why?" she asked.``) never split. A line break on
    its own does not split either (text is often hard-wrapped).

    Args:
        text (str): the text.
        start (int): first character to split. (default: :obj:`0`)
        end (int, optional): one past the last character.

    Returns:
        list of ``(start, end)`` character spans into :obj:`text`, stripped,
        non-empty and in order.
    """
    end = len(text) if end is None else end
    spans, sentence_start = [], start
    for match in _TERMINATOR.finditer(text, start, end):
        following = _OPENER.match(text, match.end(), end)
        if following is None:
            continue
        if match.group().startswith('.') and len(match.group().rstrip(
                '\'"\u2019\u201d)]')) == 1:
            word = _word_before(text, match.start(), sentence_start)
            if word.lower() in _ABBREVIATIONS or (len(word) == 1 and
                                                  word.isupper()):
                continue
        spans.append((sentence_start, match.end()))
        sentence_start = match.end()
    spans.append((sentence_start, end))
    return [s for s in (_strip_span(text, a, b) for a, b in spans) if s]


def word_tokenize(text: str, start: int = 0, end: Optional[int] = None,
                  lowercase: bool = True) -> Tuple[List[str], List[Span]]:
    r"""The built-in word tokenizer: runs of letters and digits (keeping
    inner apostrophes, hyphens, periods and commas, so ``don't``, ``e-mail``,
    ``3.14`` and ``1,000`` stay whole) and single punctuation marks.

    Args:
        text (str): the text.
        start (int): first character to tokenise. (default: :obj:`0`)
        end (int, optional): one past the last character.
        lowercase (bool): lower-case the tokens. (default: :obj:`True`)

    Returns:
        ``(tokens, spans)``: the token strings and their character spans.
    """
    end = len(text) if end is None else end
    tokens, spans = [], []
    for match in _WORD.finditer(text, start, end):
        token = match.group()
        tokens.append(token.lower() if lowercase else token)
        spans.append(match.span())
    return tokens, spans


def _strip_span(text: str, start: int, end: int) -> Optional[Span]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _word_before(text: str, position: int, lower_bound: int) -> str:
    # The word that a period at `position` terminates, e.g. 'e.g' or 'Dr'.
    begin = position
    while begin > lower_bound and not text[begin - 1].isspace() and \
            text[begin - 1] not in '"\'(\u201c\u2018[':
        begin -= 1
    return text[begin:position]


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------


class Vocabulary:
    r"""A token-string to id map for the built-in word tokenizer.

    Ids ``0`` and ``1`` are the padding and unknown tokens; unknown strings map
    to :attr:`unk_id`. Build one from the training documents with
    :meth:`build`, save it next to a processed dataset with :meth:`save`.

    Args:
        tokens (list of str): the vocabulary, in id order, without the two
            special tokens (they are prepended).
    """
    PAD = '<pad>'
    UNK = '<unk>'
    pad_id = 0
    unk_id = 1

    def __init__(self, tokens: Sequence[str]):
        self.itos: List[str] = [self.PAD, self.UNK]
        self.stoi: Dict[str, int] = {self.PAD: 0, self.UNK: 1}
        for token in tokens:
            if token in self.stoi:
                raise ValueError(f'Vocabulary: token {token!r} appears twice')
            self.stoi[token] = len(self.itos)
            self.itos.append(token)

    @classmethod
    def build(cls, documents: Iterable[Iterable[str]],
              max_size: Optional[int] = None,
              min_count: int = 1) -> 'Vocabulary':
        r"""Counts tokens over :obj:`documents` and keeps the
        :obj:`max_size` most frequent ones seen at least :obj:`min_count`
        times (ties broken alphabetically, so the result is deterministic).

        Args:
            documents (iterable of iterables of str): tokenised documents.
            max_size (int, optional): largest number of tokens kept, special
                tokens excluded.
            min_count (int): smallest count kept. (default: :obj:`1`)
        """
        counts = Counter()
        for tokens in documents:
            counts.update(tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_count),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size]
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def lookup(self, tokens: Iterable[str]) -> List[int]:
        r"""Ids of :obj:`tokens` (:attr:`unk_id` for unknown ones)."""
        get, unk = self.stoi.get, self.unk_id
        return [get(t, unk) for t in tokens]

    def save(self, path: str) -> None:
        r"""Writes the vocabulary as a JSON list of strings."""
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(self.itos[2:], f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> 'Vocabulary':
        r"""Reads a vocabulary written by :meth:`save`."""
        with open(path, encoding='utf-8') as f:
            return cls(json.load(f))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self)})'


# --------------------------------------------------------------------------
# Tokenizer adapters
# --------------------------------------------------------------------------


def _is_hf_tokenizer(tokenizer: Any) -> bool:
    return hasattr(tokenizer, 'convert_tokens_to_ids') and callable(tokenizer)


class _TokenSource:
    r"""Turns (text, span) into (token ids, spans) for every kind of tokenizer
    from_document accepts, so the tree building does not care which."""

    def __init__(self, tokenizer, vocab, lowercase: bool,
                 num_hash_buckets: int):
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.lowercase = lowercase
        self.num_hash_buckets = num_hash_buckets
        self.hf = tokenizer is not None and _is_hf_tokenizer(tokenizer)
        if tokenizer is not None and not callable(tokenizer):
            raise ValueError(f'tokenizer must be callable (a Hugging Face '
                             f'tokenizer or a function str -> list), got '
                             f'{type(tokenizer).__name__}')

    def __call__(self, text: str, start: int, end: int
                 ) -> Tuple[List[int], List[Span]]:
        if self.tokenizer is None:
            tokens, spans = word_tokenize(text, start, end, self.lowercase)
            return self._ids(tokens), spans
        piece = text[start:end]
        if self.hf:
            encoded = self.tokenizer(piece, add_special_tokens=False,
                                     return_offsets_mapping=getattr(
                                         self.tokenizer, 'is_fast', False),
                                     verbose=False)
            ids = list(encoded['input_ids'])
            offsets = encoded.get('offsets_mapping')
            if offsets is None:
                spans = [(start, end)] * len(ids)
            else:
                spans = [(start + a, start + b) for a, b in offsets]
            return ids, spans
        tokens = self.tokenizer(piece)
        if isinstance(tokens, (str, bytes)) or not isinstance(
                tokens, Iterable):
            raise ValueError(f'tokenizer must return a list of tokens (str '
                             f'or int), got {type(tokens).__name__}')
        tokens = list(tokens)
        if all(isinstance(t, int) for t in tokens):
            ids = tokens
        elif all(isinstance(t, str) for t in tokens):
            ids = self._ids(tokens)
        else:
            raise ValueError('tokenizer must return only strings or only '
                             'integer ids')
        # A plain callable gives no offsets: each token maps to its unit.
        return ids, [(start, end)] * len(ids)

    def _ids(self, tokens: List[str]) -> List[int]:
        if self.vocab is not None:
            if isinstance(self.vocab, Vocabulary):
                return self.vocab.lookup(tokens)
            if 'unk' not in self.__dict__:
                self.unk = _vocab_unk_id(self.vocab)
            return [self.vocab.get(t, self.unk) for t in tokens]
        # Hashing trick: stable across runs and machines (crc32, not hash()).
        buckets = self.num_hash_buckets
        return [zlib.crc32(t.encode('utf-8')) % buckets for t in tokens]


def _vocab_unk_id(vocab: Mapping[str, int]) -> int:
    for key in ('<unk>', '[UNK]', '<UNK>', 'UNK'):
        if key in vocab:
            return vocab[key]
    raise ValueError('vocab has no unknown token (one of <unk>, [UNK]); '
                     'use hsa_graph.convert.Vocabulary or add one')


# --------------------------------------------------------------------------
# The converter
# --------------------------------------------------------------------------


def _check_levels(levels: Sequence[str]) -> Tuple[str, ...]:
    levels = tuple(levels)
    if not levels or levels[-1] != 'token':
        raise ValueError(f"levels must end with 'token', got {levels}")
    unknown = [lv for lv in levels if lv not in DOCUMENT_LEVELS]
    if unknown:
        raise ValueError(f'Unknown levels {unknown}; choose an ordered subset '
                         f'of {DOCUMENT_LEVELS} ending with "token"')
    ranks = [DOCUMENT_LEVELS.index(lv) for lv in levels]
    if ranks != sorted(set(ranks)):
        raise ValueError(f'levels must be an ordered subset of '
                         f'{DOCUMENT_LEVELS} without repeats, got {levels}')
    return levels


def _check_window(window, levels: Tuple[str, ...]) -> Optional[List[int]]:
    # Returns the fan-out of every non-token level, outermost first.
    if window is None:
        return None
    units = levels[:-1]
    if isinstance(window, Mapping):
        missing = [u for u in units if u not in window]
        extra = [k for k in window if k not in units]
        if missing or extra:
            raise ValueError(f'window must give a size for each of {units} '
                             f'(how many children each such unit holds); '
                             f'missing {missing}, unexpected {extra}')
        sizes = [window[u] for u in units]
    else:
        sizes = list(window)
        if len(sizes) != len(units):
            raise ValueError(f'window must hold one size per level in '
                             f'{units} (children per unit, outermost first), '
                             f'got {len(sizes)} sizes')
    for unit, size in zip(units, sizes):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f'window size for {unit!r} must be a positive '
                             f'integer, got {size!r}')
    return sizes


def from_document(text: str, tokenizer: Optional[Any] = None,
                  levels: Sequence[str] = DOCUMENT_LEVELS,
                  window: Optional[Union[Sequence[int],
                                         Mapping[str, int]]] = None,
                  vocab: Optional[Mapping[str, int]] = None,
                  max_tokens: Optional[int] = None, lowercase: bool = True,
                  num_hash_buckets: int = 2**18,
                  max_sentence_tokens: Optional[int] = MAX_SENTENCE_TOKENS,
                  **kwargs: Any) -> Hierarchy:
    r"""Converts a document into a :class:`~hsa_graph.Hierarchy` whose leaves
    are its tokens: document -> paragraphs -> sentences -> tokens by default.

    Paragraphs end at blank lines; sentences come from
    :func:`split_sentences`, which survives abbreviations, decimals and
    quotes. For text without structure (lower-cased, no punctuation, no line
    breaks), pass :obj:`window` to cut the token sequence into fixed windows
    instead: ``window=(8, 32)`` makes paragraphs of 8 "sentences" of 32
    tokens (the last ones shorter). ``levels=('token',)`` gives the flat tree
    (all tokens children of the root), the flat-attention baseline.

    Sentences are bounded: HSA's sibling step costs :math:`O(b^2)` for a
    family of :math:`b` members, so a run of text without sentence ends
    (``'word ' * 200_000``) must not become one family of 200,000 tokens. A
    sentence (the innermost unit of :obj:`levels`) with more than
    :obj:`max_sentence_tokens` tokens keeps its one node, whose tokens are
    cut into consecutive windows of near-equal size (at most
    :obj:`max_sentence_tokens` each), grouped again the same way while there
    are more than :obj:`max_sentence_tokens` windows: a balanced subtree in
    which no family exceeds the bound. Window nodes carry the sentence's
    ``family_type`` and their index among siblings as ``pos``. The flat tree
    (``levels=('token',)``) and :obj:`window` mode are not cut: their family
    sizes are the caller's explicit choice.

    Nodes are numbered depth first in reading order (root ``0``), so the
    leaves in ascending id are the tokens in text order. Units without any
    token (e.g. a sentence of punctuation when the tokenizer drops it) get no
    node, since they have no leaf.

    Args:
        text (str): the document.
        tokenizer (callable, optional): a Hugging Face tokenizer (ids come
            from it, special tokens are not added), or any callable
            ``str -> list[str]`` or ``str -> list[int]``. :obj:`None` uses
            :func:`word_tokenize`. (default: :obj:`None`)
        levels (tuple of str): the units below the root, outermost first, an
            ordered subset of :data:`DOCUMENT_LEVELS` ending with
            ``'token'``. (default: ``('paragraph', 'sentence', 'token')``)
        window (tuple or dict, optional): fixed-window mode; the number of
            children of each unit in :obj:`levels[:-1]`, outermost first, or
            a dict such as ``{'paragraph': 8, 'sentence': 32}``.
        vocab (Vocabulary or dict, optional): maps token strings to ids when
            the tokenizer returns strings. Without it, string tokens are
            hashed (crc32) into :obj:`num_hash_buckets` ids.
        max_tokens (int, optional): keep only the first :obj:`max_tokens`
            tokens of the document (the truncation is the caller's explicit
            choice; ``num_tokens`` keeps the untruncated count).
        lowercase (bool): lower-case words in the built-in tokenizer.
            (default: :obj:`True`)
        num_hash_buckets (int): id range of the hashing fallback.
            (default: :obj:`262144`)
        max_sentence_tokens (int, optional): the most tokens (children) one
            sentence node holds; a longer sentence is cut into a balanced
            subtree of windows of at most this many tokens (see above).
            :obj:`None` keeps sentences whole, however long.
            (default: :obj:`128`)
        **kwargs: further attributes stored on the result (e.g. ``y``).

    Returns:
        A validated :class:`~hsa_graph.Hierarchy` with ``edge_index``,
        ``pos`` (``[N, 1]`` index among siblings, ``0`` for the root),
        ``token_id`` (``[N]`` vocabulary id on leaves, ``-1`` on internal
        nodes), ``source_id`` (``[N]`` position of each leaf's token in the
        document's token sequence, ``-1`` on internal nodes), ``char_span``
        (``[N, 2]`` character range of every node in :obj:`text`; a plain
        callable tokenizer gives each token its unit's range),
        ``family_type`` (``[N]`` index into :data:`DOCUMENT_LEVELS` of every
        node's level, ``-1`` for the root) and ``num_tokens`` (the token count
        before truncation).

    Raises:
        ValueError: on text that is not a :class:`str` or not valid Unicode
            (a lone surrogate), an empty document, a document without any
            token, bad :obj:`levels`, :obj:`window`, :obj:`max_tokens`,
            :obj:`num_hash_buckets` or :obj:`max_sentence_tokens`, or a
            tokenizer returning something other than a list of tokens.

    Example::

        >>> h = from_document('Dr. Smith paid $3.50. He left.\n\nThe end.')
        >>> h.num_leaves, h.height
        (13, 3)
    """
    if not isinstance(text, str):
        raise ValueError(f'text must be a str, got {type(text).__name__}')
    _check_unicode(text)
    if not text.strip():
        raise ValueError('Cannot build a hierarchy from an empty document')
    if max_tokens is not None:
        max_tokens = positive_int(max_tokens, 'max_tokens', 1)
    num_hash_buckets = positive_int(num_hash_buckets, 'num_hash_buckets', 1)
    if max_sentence_tokens is not None:
        max_sentence_tokens = positive_int(max_sentence_tokens,
                                           'max_sentence_tokens', 2)
    levels = _check_levels(levels)
    sizes = _check_window(window, levels)
    source = _TokenSource(tokenizer, vocab, lowercase, num_hash_buckets)

    # Units below the root as nested lists; a leaf unit is (ids, spans).
    if sizes is None:
        tree = _structured_units(text, levels, source)
        total = _count_tokens(tree, len(levels))
    else:
        ids, spans = source(text, 0, len(text))
        total = len(ids)
        if max_tokens is not None:
            ids, spans = ids[:max_tokens], spans[:max_tokens]
        tree = _windowed_units(ids, spans, sizes)
    if total == 0:
        raise ValueError('The tokenizer returned no token for this document '
                         '(a hierarchy needs at least one leaf)')
    if sizes is None and max_tokens is not None:
        tree = _truncate(tree, len(levels), max_tokens)
    if sizes is None and len(levels) > 1 and max_sentence_tokens is not None:
        tree = _bound_sentences(tree, len(levels), max_sentence_tokens)
    return _build_hierarchy(text, tree, levels, total, kwargs)


def _check_unicode(text: str) -> None:
    # A lone surrogate (e.g. from bytes decoded with 'surrogateescape') is
    # not a character: it can be neither hashed (UTF-8) nor tokenised
    # reliably. Say where it is instead of failing deep in a tokenizer.
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as error:
        raise ValueError(
            f'text is not valid Unicode: a lone surrogate '
            f'{text[error.start]!r} at character {error.start}; decode the '
            f"bytes with errors='replace' (or repair them) first") from None


class _Windows(list):
    r"""A long sentence's tokens cut into consecutive windows: a list of
    ``(ids, spans)`` units or of further :class:`_Windows`, emitted as
    nested nodes at the sentence's level."""


def _split_evenly(items: Sequence[Any], bound: int) -> List[Sequence[Any]]:
    # ceil(n / bound) consecutive pieces of near-equal size (each <= bound).
    n = len(items)
    parts = -(-n // bound)
    cuts = [i * n // parts for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def _bound_sentence(unit: Any, bound: int) -> Any:
    ids, spans = unit
    if len(ids) <= bound:
        return unit
    windows: List[Any] = [(ids[r.start:r.stop], spans[r.start:r.stop])
                          for r in _split_evenly(range(len(ids)), bound)]
    while len(windows) > bound:
        windows = [_Windows(group) for group in _split_evenly(windows, bound)]
    return _Windows(windows)


def _bound_sentences(tree: Any, depth: int, bound: int) -> Any:
    if depth == 1:
        return _bound_sentence(tree, bound)
    return [_bound_sentences(child, depth - 1, bound) for child in tree]


def _structured_units(text: str, levels: Tuple[str, ...], source
                      ) -> List[Any]:
    def sentences_of(start: int, end: int) -> List[Any]:
        spans = split_sentences(text, start, end)
        return [source(text, a, b) for a, b in spans]

    paragraphs = split_paragraphs(text)
    if levels == ('paragraph', 'sentence', 'token'):
        return [sentences_of(a, b) for a, b in paragraphs]
    if levels == ('paragraph', 'token'):
        return [source(text, a, b) for a, b in paragraphs]
    if levels == ('sentence', 'token'):
        return [s for a, b in paragraphs for s in sentences_of(a, b)]
    # levels == ('token',): one unit, the whole text, keeping character
    # offsets exact by tokenising paragraph by paragraph.
    ids, spans = [], []
    for a, b in paragraphs:
        unit_ids, unit_spans = source(text, a, b)
        ids += unit_ids
        spans += unit_spans
    return (ids, spans)


def _windowed_units(ids: List[int], spans: List[Span], sizes: List[int]
                    ) -> Any:
    # Cut innermost first: tokens into windows of sizes[-1], those into
    # groups of sizes[-2], and so on.
    if not sizes:
        return (ids, spans)
    width = sizes[-1]
    units: List[Any] = [(ids[i:i + width], spans[i:i + width])
                        for i in range(0, len(ids), width)]
    for width in reversed(sizes[:-1]):
        units = [units[i:i + width] for i in range(0, len(units), width)]
    return units


def _count_tokens(tree: Any, depth: int) -> int:
    if depth == 1:
        if isinstance(tree, _Windows):
            return sum(_count_tokens(child, 1) for child in tree)
        return len(tree[0])
    return sum(_count_tokens(child, depth - 1) for child in tree)


def _truncate(tree: Any, depth: int, budget: int) -> Any:
    # Keeps the first `budget` tokens in reading order, dropping units that
    # fall entirely beyond it.
    def cut(unit, depth, budget):
        if depth == 1:
            ids, spans = unit
            return (ids[:budget], spans[:budget]), min(budget, len(ids))
        kept, used = [], 0
        for child in unit:
            if used >= budget:
                break
            child, n = cut(child, depth - 1, budget - used)
            kept.append(child)
            used += n
        return kept, used

    return cut(tree, depth, budget)[0]


def _build_hierarchy(text: str, tree: Any, levels: Tuple[str, ...],
                     num_tokens: int, kwargs: Dict[str, Any]) -> Hierarchy:
    parent: List[int] = [-1]
    position: List[int] = [0]
    token_id: List[int] = [-1]
    source_id: List[int] = [-1]
    family_type: List[int] = [-1]
    span_start: List[int] = [0]
    span_end: List[int] = [len(text)]
    level_codes = [DOCUMENT_LEVELS.index(lv) for lv in levels]
    token_code = level_codes[-1]
    window_code = level_codes[-2] if len(levels) > 1 else token_code
    counter = [0]  # tokens emitted so far (source ids)
    columns = (parent, position, token_id, source_id, family_type,
               span_start, span_end)

    def add(*row: int) -> int:          # a node's entry in every column
        for column, value in zip(columns, row):
            column.append(value)
        return len(parent) - 1

    def emit(unit: Any, depth: int, parent_id: int) -> None:
        # `unit` is a list of children (depth > 1) or (ids, spans), or at
        # depth 1 the windows of a long sentence (nested nodes).
        if depth == 1 and isinstance(unit, _Windows):
            for rank, child in enumerate(unit):
                node = add(parent_id, rank, -1, -1, window_code, 0, 0)
                emit(child, 1, node)
                span_start[node] = span_start[node + 1]
                span_end[node] = span_end[-1]
            return
        if depth == 1:
            ids, spans = unit
            for rank, (tid, (a, b)) in enumerate(zip(ids, spans)):
                add(parent_id, rank, int(tid), counter[0], token_code, a, b)
                counter[0] += 1
            return
        code = level_codes[len(levels) - depth]
        rank = 0
        for child in unit:
            if _count_tokens(child, depth - 1) == 0:
                continue  # a unit without tokens has no leaf: no node
            node = add(parent_id, rank, -1, -1, code, 0, 0)
            emit(child, depth - 1, node)
            # The unit's span runs from its first to its last token.
            span_start[node] = span_start[node + 1]
            span_end[node] = span_end[-1]
            rank += 1

    if len(levels) == 1:
        emit(tree, 1, 0)
    else:
        emit(tree, len(levels), 0)
    if len(parent) == 1:
        raise ValueError('The tokenizer returned no token for this document '
                         '(a hierarchy needs at least one leaf)')
    return Hierarchy.from_parent(
        torch.tensor(parent),
        pos=torch.tensor(position, dtype=torch.float).unsqueeze(-1),
        token_id=torch.tensor(token_id, dtype=torch.long),
        source_id=torch.tensor(source_id, dtype=torch.long),
        family_type=torch.tensor(family_type, dtype=torch.long),
        char_span=torch.stack([torch.tensor(span_start),
                               torch.tensor(span_end)], dim=1),
        num_tokens=num_tokens, **kwargs)


# --------------------------------------------------------------------------
# The flat baseline and a transform
# --------------------------------------------------------------------------


def flatten_hierarchy(hierarchy: Hierarchy) -> Hierarchy:
    r"""The one-level tree over the same leaves: every leaf becomes a child
    of the root, positioned by its rank in ascending node id (reading order
    for :func:`from_document`). HSA on it is flat softmax attention over the
    leaves (exactly, with ``include_self=True``), the paper's FSA baseline.

    Every node-level attribute keeps the rows of the root and the leaves;
    ``pos`` becomes ``[L + 1, 1]`` ranks (``0`` for the root). Graph-level
    attributes (``y``, ``num_tokens``...) are copied.

    Args:
        hierarchy (Hierarchy): a single tree (not a batch).

    Returns:
        A :class:`~hsa_graph.Hierarchy` with ``L + 1`` nodes.
    """
    if getattr(hierarchy, 'num_graphs', None) not in (None, 1):
        raise ValueError('flatten_hierarchy takes a single hierarchy; '
                         'flatten before batching')
    num_nodes = hierarchy.num_nodes
    layout = hierarchy.layout
    if layout.num_trees != 1:
        raise ValueError(f'flatten_hierarchy takes a single tree, got a '
                         f'forest of {layout.num_trees}')
    root = int((layout.parent < 0).nonzero()[0])
    leaves = layout.is_leaf.nonzero().flatten()
    keep = torch.cat([torch.tensor([root]), leaves])
    num_leaves = leaves.numel()
    out = Hierarchy()
    for key, value in hierarchy:
        if key in ('edge_index', 'pos'):
            continue
        if isinstance(value, Tensor) and hierarchy.is_node_attr(key) and \
                value.size(0) == num_nodes:
            out[key] = value[keep]
        else:
            out[key] = value
    out.edge_index = torch.stack([torch.arange(1, num_leaves + 1),
                                  torch.zeros(num_leaves, dtype=torch.long)])
    out.pos = torch.arange(num_leaves + 1, dtype=torch.float).sub(1).clamp(
        min=0).unsqueeze(-1)
    out.num_nodes = num_leaves + 1
    out.validate()
    return out


class DocumentToHierarchy(BaseTransform):
    r"""A :class:`~torch_geometric.transforms.BaseTransform` that turns a
    :class:`~torch_geometric.data.Data` holding a ``text`` attribute into a
    hierarchy with :func:`from_document`, keeping every other attribute
    (``y``...). It composes with :class:`torch_geometric.transforms.Compose`
    and datasets' ``pre_transform``.

    Args:
        **kwargs: arguments of :func:`from_document` (:obj:`tokenizer`,
            :obj:`levels`, :obj:`window`, :obj:`vocab`, :obj:`max_tokens`...).
    """

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def forward(self, data: Data) -> Hierarchy:
        text = getattr(data, 'text', None)
        if text is None:
            raise ValueError("DocumentToHierarchy needs a 'text' attribute")
        extra = {k: v for k, v in data if k != 'text'}
        return from_document(text, **self.kwargs, **extra)

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in self.kwargs.items()
                         if k not in ('tokenizer', 'vocab'))
        return f'{self.__class__.__name__}({args})'
