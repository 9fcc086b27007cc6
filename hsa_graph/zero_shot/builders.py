r"""Token hierarchies for zero-shot HSA: one tree per sequence of a padded
batch, returned as a single forest.

Every builder returns a :class:`~hsa_graph.Hierarchy` whose leaves are exactly
the non-padding tokens of the batch, with two extra attributes:

* ``batch`` (``[N]``): the sequence each node belongs to;
* ``source_id`` (``[N]``): for a leaf, the position of its token in its
  sequence; ``-1`` for internal nodes.

A tree never mixes tokens of two sequences, so sequences never attend to each
other. A custom builder (any callable ``(input_ids, attention_mask) ->
Hierarchy``) must follow the same contract; :func:`check_token_hierarchy`
verifies it.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Sequence, Set

import torch
from torch import Tensor

from ..hierarchy import Hierarchy

__all__ = ['flat_hierarchy', 'window_hierarchy', 'sentence_hierarchy',
           'sequence_ends',
           'SentenceHierarchyBuilder', 'check_token_hierarchy',
           'resolve_builder']

TokenHierarchyBuilder = Callable[[Optional[Tensor], Tensor], Hierarchy]


def _check_mask(attention_mask: Tensor) -> Tensor:
    if not isinstance(attention_mask, Tensor) or attention_mask.dim() != 2:
        shape = (list(attention_mask.shape)
                 if isinstance(attention_mask, Tensor) else
                 type(attention_mask).__name__)
        raise ValueError(f'attention_mask must be a [batch, seq_len] tensor, '
                         f'got {shape}')
    if attention_mask.is_floating_point():
        bad = (attention_mask != 0) & (attention_mask != 1)
        if bool(bad.any()):
            raise ValueError('attention_mask must hold 0 (padding) and 1 '
                             '(token); got other values (pass the 2-D '
                             'tokenizer mask, not an additive mask)')
    return attention_mask.detach().to('cpu') != 0


def _add_parent(children: List[int], seq: int, parent: List[int],
                batch: List[int], source: List[int]) -> int:
    r"""Appends an internal node of sequence :obj:`seq` above
    :obj:`children` to the growing ``parent``/``batch``/``source`` lists and
    returns its id (the next free one: ids are list positions)."""
    node = len(parent)
    parent.append(-1)
    batch.append(seq)
    source.append(-1)  # internal nodes stand for no token
    for child in children:
        parent[child] = node
    return node


def _to_hierarchy(parent: Tensor, batch: Tensor, source_id: Tensor,
                  device) -> Hierarchy:
    child = (parent >= 0).nonzero().flatten()
    edge_index = torch.stack([child, parent[child]], dim=0)
    return Hierarchy(edge_index=edge_index.to(device),
                     num_nodes=parent.numel(), batch=batch.to(device),
                     source_id=source_id.to(device))


def window_hierarchy(attention_mask: Tensor,
                     branching: Sequence[int] = (2, 4, 8, 16),
                     global_tokens: Optional[Tensor] = None) -> Hierarchy:
    r"""Fixed non-overlapping windows over each sequence's tokens, grouped
    bottom-up with the given branching factors (the paper's zero-shot tree is
    ``(2, 4, 8, 16)``: pairs of tokens, groups of 4 pairs, ...). Whatever is
    left above the last factor hangs under one root per sequence; a sequence
    stops growing as soon as it has a single node. ``branching=()`` gives the
    flat tree (every token a child of the root).

    Windows follow the order of the non-padding tokens, so left and right
    padding give the same trees. A window at the end of a sequence may be
    smaller than the others (even a single node, which passes its whole mass
    through: the spec's only child).

    Args:
        attention_mask (torch.Tensor): ``[B, L]``, 1 for tokens and 0 for
            padding.
        branching (sequence of int): window sizes, bottom-up, each >= 2.
            (default: :obj:`(2, 4, 8, 16)`)
        global_tokens (torch.Tensor, optional): ``[B, L]`` bool, tokens kept
            out of the windows and hung directly under the root, as siblings
            of the top-level windows (e.g. ``[CLS]`` and ``[SEP]``, which
            BERT heads use as attention sinks). (default: :obj:`None`)

    Shapes:
        - **input:** attention_mask ``[B, L]``, global_tokens ``[B, L]``
        - **output:** a forest of at most ``B`` trees whose leaves are the
          ``attention_mask.sum()`` tokens, in mask order (ids ``0..M-1``).
    """
    branching = tuple(branching)
    for factor in branching:
        if not isinstance(factor, int) or isinstance(factor, bool) or \
                factor < 2:
            raise ValueError(f'branching factors must be integers >= 2, got '
                             f'{branching}')
    mask = _check_mask(attention_mask)
    device = attention_mask.device
    seq_of_leaf, pos_of_leaf = mask.nonzero(as_tuple=True)
    num_leaves = seq_of_leaf.numel()
    if num_leaves == 0:
        raise ValueError('attention_mask has no token at all (every position '
                         'is padding); nothing to attend to')
    num_seqs = mask.size(0)
    if global_tokens is None:
        is_global = torch.zeros(num_leaves, dtype=torch.bool)
    else:
        if global_tokens.shape != mask.shape:
            raise ValueError(f'global_tokens must have the shape of '
                             f'attention_mask {list(mask.shape)}, got '
                             f'{list(global_tokens.shape)}')
        is_global = global_tokens.detach().to('cpu').bool()[mask]

    parent = torch.full((num_leaves, ), -1, dtype=torch.long)
    batches: List[Tensor] = [seq_of_leaf]
    # Nodes of the current level: their ids, sequence and rank in it.
    level_ids = (~is_global).nonzero().flatten()
    level_seq = seq_of_leaf[level_ids]
    counts = torch.bincount(level_seq, minlength=num_seqs)
    level_rank = torch.arange(level_ids.numel()) - (
        torch.cumsum(counts, 0) - counts)[level_seq]
    next_id = num_leaves
    for factor in branching:
        grows = counts > 1                            # [B]
        if not bool(grows.any()):
            break
        width = torch.div(counts + factor - 1, factor, rounding_mode='floor')
        # Parents of growing sequences get fresh ids; the others are done.
        new_counts = torch.where(grows, width, torch.zeros_like(width))
        new_start = next_id + torch.cumsum(new_counts, 0) - new_counts
        node_grows = grows[level_seq]
        parent_rank = torch.div(level_rank, factor, rounding_mode='floor')
        total_new = int(new_counts.sum())
        parent = torch.cat([parent, torch.full((total_new, ), -1,
                                               dtype=torch.long)])
        parent[level_ids[node_grows]] = (new_start[level_seq] +
                                         parent_rank)[node_grows]
        # Sequences that stopped growing keep their single top node.
        stopped = ~node_grows
        new_ids = next_id + torch.arange(total_new)
        new_seq = torch.repeat_interleave(torch.arange(num_seqs), new_counts)
        new_rank = torch.arange(total_new) - (
            torch.cumsum(new_counts, 0) - new_counts)[new_seq]
        batches.append(new_seq)
        level_ids = torch.cat([level_ids[stopped], new_ids])
        level_seq = torch.cat([level_seq[stopped], new_seq])
        level_rank = torch.cat([level_rank[stopped], new_rank])
        counts = torch.bincount(level_seq, minlength=num_seqs)
        next_id += total_new
    # Top: the remaining nodes of each sequence and its global tokens share
    # one root (none is needed where a sequence has a single top node).
    global_ids = is_global.nonzero().flatten()
    top_ids = torch.cat([level_ids, global_ids])
    top_seq = torch.cat([level_seq, seq_of_leaf[global_ids]])
    top_counts = torch.bincount(top_seq, minlength=num_seqs)
    needs_root = top_counts > 1
    root_seq = needs_root.nonzero().flatten()
    root_of_seq = torch.full((num_seqs, ), -1, dtype=torch.long)
    root_of_seq[root_seq] = next_id + torch.arange(root_seq.numel())
    parent = torch.cat([parent, torch.full((root_seq.numel(), ), -1,
                                           dtype=torch.long)])
    parent[top_ids] = root_of_seq[top_seq]
    batches.append(root_seq)
    batch = torch.cat(batches)
    source_id = torch.full((parent.numel(), ), -1, dtype=torch.long)
    source_id[:num_leaves] = pos_of_leaf
    return _to_hierarchy(parent, batch, source_id, device)


def sequence_ends(attention_mask: Tensor) -> Tensor:
    r"""``[B, L]`` bool marking the first and last non-padding token of each
    sequence: ``[CLS]``/``[SEP]`` (or ``<s>``/``</s>``) of single-segment
    inputs, for :func:`window_hierarchy`'s :obj:`global_tokens`.

    Args:
        attention_mask (torch.Tensor): ``[B, L]``, 1 for tokens.
    """
    mask = _check_mask(attention_mask)
    positions = torch.arange(mask.size(1)).expand_as(mask)
    big = mask.size(1)
    first = torch.where(mask, positions, big).min(1).values
    last = torch.where(mask, positions, -1).max(1).values
    ends = (positions == first[:, None]) | (positions == last[:, None])
    return (ends & mask).to(attention_mask.device)


def flat_hierarchy(attention_mask: Tensor) -> Hierarchy:
    r"""One family per sequence: every token is a child of the sequence's
    root. With ``include_self=True``, HSA on this tree is exactly the
    softmax attention of the original model.

    Args:
        attention_mask (torch.Tensor): ``[B, L]``, 1 for tokens and 0 for
            padding.

    Shapes:
        - **input:** attention_mask ``[B, L]``
        - **output:** a forest with ``attention_mask.sum()`` leaves and one
          root per non-empty sequence.
    """
    return window_hierarchy(attention_mask, branching=())


class SentenceHierarchyBuilder:
    r"""Sentence- and word-aware token trees: sequence -> sentences -> words
    -> sub-word tokens, read off a Hugging Face tokenizer's vocabulary.

    * A **word** is a token that starts a word plus the continuation pieces
      after it (WordPiece ``##`` pieces, or BPE pieces without the leading
      space marker ``Ġ``/``▁``).
    * A **sentence** ends after a token in :obj:`sentence_end` (``.``, ``!``,
      ``?``) or once it holds :obj:`max_sentence_words` words (text without
      punctuation, such as 20 Newsgroups' letters-only lines, thus gets
      word-aligned windows).
    * Special tokens (``[CLS]``, ``[SEP]``, ``<s>``...) are leaves directly
      under the root: every token can reach them in one family.
    * Nodes with a single child are skipped (a one-piece word is a leaf of its
      sentence), so no chain of only children is built.

    Args:
        tokenizer: a Hugging Face tokenizer (``PreTrainedTokenizerBase``).
        max_sentence_words (int): longest sentence before a forced split.
            (default: :obj:`32`)
        sentence_end (iterable of str): tokens ending a sentence.
            (default: :obj:`('.', '!', '?')`)

    Example::

        >>> builder = SentenceHierarchyBuilder(tokenizer)
        >>> batch = tokenizer(texts, padding=True, return_tensors='pt')
        >>> forest = builder(batch['input_ids'], batch['attention_mask'])
    """

    def __init__(self, tokenizer: Any, max_sentence_words: int = 32,
                 sentence_end: Iterable[str] = ('.', '!', '?')):
        if max_sentence_words < 1:
            raise ValueError(f'max_sentence_words must be >= 1, got '
                             f'{max_sentence_words}')
        vocab = getattr(tokenizer, 'get_vocab', None)
        if vocab is None:
            raise ValueError('SentenceHierarchyBuilder needs a Hugging Face '
                             'tokenizer (with get_vocab()); got '
                             f'{type(tokenizer).__name__}')
        vocab = tokenizer.get_vocab()
        self.max_sentence_words = int(max_sentence_words)
        size = max(vocab.values()) + 1
        uses_wordpiece = any(tok.startswith('##') for tok in vocab)
        continuation = torch.zeros(size, dtype=torch.bool)
        ends = torch.zeros(size, dtype=torch.bool)
        end_set: Set[str] = set(sentence_end)
        for token, token_id in vocab.items():
            if uses_wordpiece:
                continuation[token_id] = token.startswith('##')
            else:  # byte-level BPE / sentencepiece: a marker starts words
                continuation[token_id] = not token.startswith(('Ġ', '▁'))
            stripped = token.lstrip('Ġ▁')
            ends[token_id] = stripped in end_set
        special = torch.zeros(size, dtype=torch.bool)
        special[torch.tensor(sorted(set(tokenizer.all_special_ids)),
                             dtype=torch.long)] = True
        continuation &= ~special
        ends &= ~special
        # Punctuation never continues a word, even in BPE vocabularies.
        continuation &= ~ends
        self.is_continuation = continuation
        self.is_sentence_end = ends
        self.is_special = special

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(max_sentence_words='
                f'{self.max_sentence_words})')

    def __call__(self, input_ids: Optional[Tensor],
                 attention_mask: Tensor) -> Hierarchy:
        r"""Builds the forest for a padded batch.

        Args:
            input_ids (torch.Tensor): ``[B, L]`` token ids.
            attention_mask (torch.Tensor): ``[B, L]``, 1 for tokens.

        Shapes:
            - **input:** input_ids, attention_mask ``[B, L]``
            - **output:** a forest whose leaves are the ``attention_mask.sum()``
              tokens, in mask order (ids ``0..M-1``), internal nodes after.
        """
        if input_ids is None:
            raise ValueError("hierarchy='sentences' needs input_ids (the "
                             'model was called with inputs_embeds only)')
        mask = _check_mask(attention_mask)
        ids = input_ids.detach().to('cpu').long()
        if ids.shape != mask.shape:
            raise ValueError(f'input_ids {list(ids.shape)} and attention_mask '
                             f'{list(mask.shape)} differ in shape')
        if bool(mask.sum() == 0):
            raise ValueError('attention_mask has no token at all')
        if int(ids.max()) >= self.is_special.numel() or int(ids.min()) < 0:
            raise ValueError('input_ids hold ids outside the tokenizer '
                             'vocabulary given to the builder')
        # Leaves first (all sequences), internal nodes after: keeps the leaf
        # order identical to the mask order, like the window builder.
        seq_of_leaf, pos_of_leaf = mask.nonzero(as_tuple=True)
        num_leaves = seq_of_leaf.numel()
        parent = [-1] * num_leaves
        batch = seq_of_leaf.tolist()
        source = pos_of_leaf.tolist()
        cont = self.is_continuation[ids].tolist()
        ends = self.is_sentence_end[ids].tolist()
        special = self.is_special[ids].tolist()
        leaf = 0
        for seq in range(mask.size(0)):
            positions = mask[seq].nonzero().flatten().tolist()
            first_leaf = leaf
            leaf += len(positions)
            if not positions:
                continue
            # Group leaves into words, words into sentences.
            top: List[List[int]] = []          # members of the root
            sentences: List[List[List[int]]] = []
            words: List[List[int]] = []
            for offset, position in enumerate(positions):
                node = first_leaf + offset
                if special[seq][position]:
                    if words:
                        sentences.append(words)
                        words = []
                    # A special token closes the running sentence.
                    top.append(node)
                    continue
                if cont[seq][position] and words:
                    words[-1].append(node)
                else:
                    if len(words) >= self.max_sentence_words:
                        sentences.append(words)
                        words = []
                    words.append([node])
                if ends[seq][position]:
                    sentences.append(words)
                    words = []
            if words:
                sentences.append(words)
            # Emit internal nodes; record the root's children in token order.
            # A group of one is not wrapped: its member takes its place.
            root_children: List[int] = list(top)
            for words in sentences:
                word_nodes = [members[0] if len(members) == 1 else
                              _add_parent(members, seq, parent, batch, source)
                              for members in words]
                root_children.append(
                    word_nodes[0] if len(word_nodes) == 1 else
                    _add_parent(word_nodes, seq, parent, batch, source))
            if len(root_children) == 1:
                continue  # the single child is the root itself
            _add_parent(root_children, seq, parent, batch, source)
        return _to_hierarchy(torch.tensor(parent, dtype=torch.long),
                             torch.tensor(batch, dtype=torch.long),
                             torch.tensor(source, dtype=torch.long),
                             attention_mask.device)


def sentence_hierarchy(input_ids: Tensor, attention_mask: Tensor,
                       tokenizer: Any, max_sentence_words: int = 32
                       ) -> Hierarchy:
    r"""Functional form of :class:`SentenceHierarchyBuilder` (which caches the
    vocabulary tables; prefer it when building many batches).

    Args:
        input_ids (torch.Tensor): ``[B, L]`` token ids.
        attention_mask (torch.Tensor): ``[B, L]``, 1 for tokens.
        tokenizer: the Hugging Face tokenizer that produced :obj:`input_ids`.
        max_sentence_words (int): longest sentence before a forced split.
            (default: :obj:`32`)
    """
    return SentenceHierarchyBuilder(tokenizer, max_sentence_words)(
        input_ids, attention_mask)


def check_token_hierarchy(hierarchy: Hierarchy, attention_mask: Tensor
                          ) -> None:
    r"""Checks the builder contract: a valid forest whose leaves are exactly
    the non-padding tokens (one leaf each, ``source_id`` = position in the
    sequence, ``-1`` on internal nodes) and whose trees never span two
    sequences.

    Args:
        hierarchy (Hierarchy): a builder's output, with ``batch`` and
            ``source_id``.
        attention_mask (torch.Tensor): ``[B, L]`` mask it was built from.

    Raises:
        ValueError: describing the first violation.
    """
    if not isinstance(hierarchy, Hierarchy):
        raise ValueError(f'A token-hierarchy builder must return a '
                         f'hsa_graph.Hierarchy, got {type(hierarchy).__name__}')
    mask = _check_mask(attention_mask)
    for name in ('batch', 'source_id'):
        value = getattr(hierarchy, name, None)
        if not isinstance(value, Tensor) or value.dim() != 1 or \
                value.numel() != hierarchy.num_nodes:
            raise ValueError(f"The token hierarchy needs a '{name}' vector "
                             f'with one entry per node ({hierarchy.num_nodes})')
    layout = hierarchy.layout   # validates the forest structure
    batch = hierarchy.batch.detach().cpu().long()
    source = hierarchy.source_id.detach().cpu().long()
    is_leaf = layout.is_leaf.cpu()
    if bool(((source >= 0) != is_leaf).any()):
        node = int(((source >= 0) != is_leaf).nonzero()[0])
        raise ValueError(f'Node {node}: source_id must be >= 0 exactly on '
                         f'leaves (got source_id {int(source[node])} on a '
                         f"{'leaf' if bool(is_leaf[node]) else 'internal node'})")
    num_seqs, seq_len = mask.shape
    if bool(((batch < 0) | (batch >= num_seqs)).any()) or bool(
            (source >= seq_len).any()):
        raise ValueError(f'batch / source_id out of range for a '
                         f'[{num_seqs}, {seq_len}] batch')
    edge_index = hierarchy.edge_index.detach().cpu()
    if bool((batch[edge_index[0]] != batch[edge_index[1]]).any()):
        raise ValueError('A tree spans two sequences (an edge joins nodes of '
                         "different 'batch'); sequences must stay apart")
    flat = batch[is_leaf] * seq_len + source[is_leaf]
    hits = torch.bincount(flat, minlength=num_seqs * seq_len)
    expected = mask.flatten().long()
    if not torch.equal(hits, expected):
        where = (hits != expected).nonzero()[0].item()
        seq, pos = divmod(where, seq_len)
        raise ValueError(f'Token ({seq}, {pos}) appears {int(hits[where])} '
                         f'times as a leaf; every non-padding token must be '
                         f'exactly one leaf and padding none')


def resolve_builder(hierarchy: Any, branching: Sequence[int] = (2, 4, 8, 16),
                    tokenizer: Any = None, global_tokens: Optional[str] = None
                    ) -> TokenHierarchyBuilder:
    r"""Turns :func:`~hsa_graph.zero_shot.patch_model`'s :obj:`hierarchy`
    argument into a builder ``(input_ids, attention_mask) -> Hierarchy``.

    Args:
        hierarchy (str or callable): ``'flat'``, ``'windows'``,
            ``'sentences'``, or a builder.
        branching (sequence of int): window sizes for ``'windows'``.
        tokenizer: needed by ``'sentences'`` and ``global_tokens='special'``.
        global_tokens (str, optional): for ``'windows'``: ``'ends'`` hangs the
            first and last token of each sequence under the root (see
            :func:`sequence_ends`), ``'special'`` every special token of
            :obj:`tokenizer`. (default: :obj:`None`)
    """
    if global_tokens not in (None, 'ends', 'special'):
        raise ValueError(f"global_tokens must be None, 'ends' or 'special', "
                         f'got {global_tokens!r}')
    if global_tokens is not None and hierarchy != 'windows':
        raise ValueError("global_tokens applies to hierarchy='windows' only "
                         "('sentences' always hangs special tokens under the "
                         'root)')
    if callable(hierarchy):
        return hierarchy
    if hierarchy == 'flat':
        return lambda input_ids, attention_mask: flat_hierarchy(attention_mask)
    if hierarchy == 'windows':
        branching = tuple(branching)
        window_hierarchy(torch.ones(1, 1), branching)  # validate now
        if global_tokens is None:
            return lambda input_ids, attention_mask: window_hierarchy(
                attention_mask, branching)
        if global_tokens == 'ends':
            return lambda input_ids, attention_mask: window_hierarchy(
                attention_mask, branching, sequence_ends(attention_mask))
        if tokenizer is None:
            raise ValueError("global_tokens='special' needs the tokenizer")
        special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))

        def build(input_ids, attention_mask):
            if input_ids is None:
                raise ValueError("global_tokens='special' needs input_ids")
            special = torch.isin(input_ids.detach().cpu(), special_ids)
            return window_hierarchy(attention_mask, branching, special)

        return build
    if hierarchy == 'sentences':
        if tokenizer is None:
            raise ValueError("hierarchy='sentences' needs the tokenizer: "
                             "patch_model(model, hierarchy='sentences', "
                             'tokenizer=tokenizer)')
        return SentenceHierarchyBuilder(tokenizer)
    raise ValueError(f"hierarchy must be 'flat', 'windows', 'sentences' or a "
                     f'callable (input_ids, attention_mask) -> Hierarchy; got '
                     f'{hierarchy!r}')
