r"""Shared plumbing of the 3-D examples (point_cloud_classification.py,
multimodal_classification.py, mesh_segmentation.py): seeding, metrics with
confidence intervals, peak-memory measurement, the epoch and seed loops,
results tables, JSON and learning curves. Not part of the library; the models
live in the example files."""
from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from hsa_graph import Hierarchy


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def macro_f1(pred: torch.Tensor, target: torch.Tensor,
             num_classes: int) -> float:
    r"""Macro-averaged F1 over the classes present in :obj:`target` or
    :obj:`pred` (a class absent from both does not count)."""
    scores = []
    for c in range(num_classes):
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / max(len(scores), 1)


def mean_iou(pred: torch.Tensor, target: torch.Tensor,
             num_classes: int) -> float:
    r"""Mean intersection over union over the classes present."""
    scores = []
    for c in range(num_classes):
        inter = int(((pred == c) & (target == c)).sum())
        union = int(((pred == c) | (target == c)).sum())
        if union:
            scores.append(inter / union)
    return sum(scores) / max(len(scores), 1)


def mean_ci(values: Sequence[float]) -> Dict[str, float]:
    r"""Mean and half-width of the 95% confidence interval (Student t over
    the seeds)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {'mean': mean, 'ci95': float('nan'), 'n': n}
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    try:
        from scipy.stats import t
        quantile = float(t.ppf(0.975, n - 1))
    except ImportError:  # pragma: no cover
        quantile = 1.96
    return {'mean': mean, 'ci95': quantile * math.sqrt(var / n), 'n': n}


def fmt(stat: Dict[str, float], digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} +- {stat['ci95']:.{digits}f}"


def _rss_bytes() -> int:
    with open('/proc/self/statm') as handle:
        return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakMemory:
    r"""Peak memory of a block: on CUDA the allocator's peak; on CPU the
    peak resident set size above its value at entry, polled every 2 ms by a
    thread (an upper bound on what the block allocated, since freed memory
    may stay with the allocator). Read :attr:`peak_mb` after the block."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak_mb = float('nan')

    def __enter__(self) -> 'PeakMemory':
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif os.path.exists('/proc/self/statm'):
            self._start = _rss_bytes()
            self._peak = self._start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_mb = (peak - self._start) / 2**20
        elif hasattr(self, '_thread'):
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._start) / 2**20


class Timer:
    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    def __enter__(self) -> 'Timer':
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summarize(runs: List[dict], metrics: Sequence[str]) -> Dict[str, dict]:
    r"""Groups per-seed runs by model name into mean +- CI per metric."""
    out: Dict[str, dict] = {}
    for name in dict.fromkeys(run['model'] for run in runs):
        mine = [run for run in runs if run['model'] == name]
        out[name] = {metric: mean_ci([run[metric] for run in mine])
                     for metric in metrics}
        out[name]['parameters'] = mine[0]['parameters']
    return out


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as handle:
        json.dump(payload, handle, indent=2)


def plot_curves(runs: List[dict], path: str, key: str = 'test_acc',
                ylabel: str = 'test accuracy', title: str = '') -> None:
    r"""One line per model (mean over seeds) of :obj:`key` per epoch, with
    the training loss beside it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in dict.fromkeys(run['model'] for run in runs):
        mine = [run for run in runs if run['model'] == name]
        for ax, metric in zip(axes, ('train_loss', key)):
            curves = [run['history'][metric] for run in mine]
            length = min(len(c) for c in curves)
            mean = [sum(c[i] for c in curves) / len(curves)
                    for i in range(length)]
            ax.plot(range(1, length + 1), mean, label=name)
    axes[0].set_ylabel('training loss')
    axes[1].set_ylabel(ylabel)
    for ax in axes:
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def augment_batch(batch, generator: torch.Generator,
                  point_rows: Optional[torch.Tensor] = None,
                  offset_rows: Optional[torch.Tensor] = None,
                  scale_range=(0.8, 1.2), jitter: float = 0.01):
    r"""Per-shape augmentation of a batch whose hierarchies (or kNN graphs)
    were built once: a random rotation about the up (z) axis and a random
    isotropic scale of the point coordinates ``x[:, :3]``, Gaussian jitter on
    them, and the same rotation of the 3-D offsets ``pos[:, :3]`` of the
    spatial cells (offsets are normalised by their parent cell, so they do
    not scale). The hierarchy then groups the points as before, with cells
    that turn with the shape.

    Args:
        batch: a PyG batch with ``x``, ``batch`` and optionally ``pos``.
        generator (torch.Generator): CPU generator of the random draws.
        point_rows (Tensor, optional): bool ``[N]``, rows of ``x`` holding
            point coordinates (default: rows with a non-zero ``x[:, :3]``).
        offset_rows (Tensor, optional): bool ``[N]``, rows of ``pos`` holding
            3-D cell offsets (default: none when ``pos`` is absent, else
            all).
    """
    num_graphs = batch.num_graphs
    device = batch.x.device
    angle = torch.rand(num_graphs, generator=generator) * 2 * math.pi
    low, high = scale_range
    scale = low + (high - low) * torch.rand(num_graphs, generator=generator)
    noise = jitter * torch.randn(batch.x.size(0), 3, generator=generator)
    angle, scale, noise = angle.to(device), scale.to(device), noise.to(device)
    graph = batch.batch
    cos, sin = angle.cos()[graph], angle.sin()[graph]

    def rotate(v):
        return torch.stack([cos * v[:, 0] - sin * v[:, 1],
                            sin * v[:, 0] + cos * v[:, 1], v[:, 2]], dim=1)

    x = batch.x.clone()
    if point_rows is None:
        point_rows = x[:, :3].abs().sum(1) > 0
    moved = rotate(x[:, :3]) * scale[graph].unsqueeze(1) + noise
    x[:, :3] = torch.where(point_rows.unsqueeze(1), moved, x[:, :3])
    batch.x = x
    pos = getattr(batch, 'pos', None)
    if pos is not None:
        if offset_rows is None:
            offset_rows = torch.ones(pos.size(0), dtype=torch.bool,
                                     device=device)
        pos = pos.clone()
        pos[:, :3] = torch.where(offset_rows.unsqueeze(1),
                                 rotate(pos[:, :3]), pos[:, :3])
        batch.pos = pos
    return batch


class RunBudget:
    r"""Stops starting new (seed, model) runs when the next one would end
    after :obj:`max_minutes` (estimated from that model's previous runs), so
    that a time-limited job still leaves complete runs behind."""

    def __init__(self, max_minutes: Optional[float]):
        self.deadline = (None if max_minutes is None else
                         time.time() + 60 * max_minutes)
        self.seconds: Dict[str, float] = {}

    def allows(self, name: str) -> bool:
        if self.deadline is None:
            return True
        return time.time() + self.seconds.get(name, 0.0) < self.deadline

    def allows_all(self, names: Sequence[str]) -> bool:
        r"""Whether one more run of every model fits."""
        if self.deadline is None:
            return True
        needed = sum(self.seconds.get(name, 0.0) for name in names)
        return time.time() + needed < self.deadline

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = max(seconds, self.seconds.get(name, 0.0))


def add_run_arguments(parser, *, quick_help: str, epochs: int, models,
                      channels: int, batch_size: int, lr: float, out: str,
                      knn: bool = True) -> None:
    """The command-line options the 3-D examples share (training budget,
    model size, seeds, device, output folder)."""
    parser.add_argument('--quick', action='store_true', help=quick_help)
    parser.add_argument('--epochs', type=int, default=epochs)
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--first-seed', type=int, default=0,
                        help='run seeds first-seed, ..., first-seed + seeds - 1')
    parser.add_argument('--models', default=','.join(models))
    parser.add_argument('--channels', type=int, default=channels)
    parser.add_argument('--layers', type=int, default=2)
    parser.add_argument('--heads', type=int, default=4)
    parser.add_argument('--dropout', type=float, default=0.1)
    parser.add_argument('--leaf-size', type=int, default=16)
    if knn:
        parser.add_argument('--k', type=int, default=16)
    parser.add_argument('--batch-size', type=int, default=batch_size)
    parser.add_argument('--lr', type=float, default=lr)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                        else 'cpu')
    parser.add_argument('--max-minutes', type=float, default=None,
                        help='start no run that would end after this')
    parser.add_argument('--out', default=out)


def setup_run(parser, args, all_models):
    """Applies --threads and returns (device, chosen models), rejecting
    unknown model names."""
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(',') if m]
    unknown = set(models) - set(all_models)
    if unknown:
        parser.error(f'unknown models {sorted(unknown)}; choose from '
                     f'{list(all_models)}')
    return torch.device(args.device), models


def data_dir(name: str) -> str:
    r"""Folder of data set :obj:`name` under ``$HSA_DATA`` (default
    ``data``)."""
    return os.path.join(os.environ.get('HSA_DATA', 'data'), name)


# --- inputs the examples build alike ----------------------------------------
def cell_family_type(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""Every non-root node sits in a 3-D cell family (type 0); roots: -1."""
    family_type = torch.full((num_nodes, ), -1, dtype=torch.long)
    family_type[edge_index[0]] = 0
    return family_type


def flat_tree(points: Tensor) -> Hierarchy:
    r"""The one-level tree of the ``hsa-flat`` baselines: a root (node n)
    with the n points as children; a point's feature and position in the
    root's frame are its coordinates (the root gets zeros)."""
    n = points.size(0)
    parent = torch.full((n + 1, ), n, dtype=torch.long)
    parent[n] = -1
    x = torch.cat([points, points.new_zeros(1, points.size(1))])
    return Hierarchy.from_parent(parent, x=x, pos=x.clone(), validate=False)


# --- training ---------------------------------------------------------------
def make_optimizer(model: torch.nn.Module, args, steps_per_epoch: int):
    r"""AdamW with a one-cycle schedule over all epochs: the same recipe for
    every model, so that the comparison is about the models alone."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                  weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
        pct_start=0.1)
    return optimizer, scheduler


def optimizer_step(loss: Tensor, optimizer, scheduler) -> None:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def train_classifier_epoch(model, loader, prepare: Callable, optimizer,
                           scheduler) -> float:
    r"""One epoch of shape classification with label-smoothed cross entropy;
    :obj:`prepare` moves a batch to the device and augments it. Returns the
    mean loss per shape."""
    total, count = 0.0, 0
    for batch in loader:
        batch = prepare(batch)
        loss = F.cross_entropy(model(batch), batch.y.view(-1),
                               label_smoothing=0.1)
        optimizer_step(loss, optimizer, scheduler)
        total += float(loss.detach()) * batch.num_graphs
        count += batch.num_graphs
    return total / count


def evaluate_classifier(model, loader, device, num_classes: int):
    r"""Accuracy and macro-F1 of one prediction per graph."""
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            preds.append(model(batch).argmax(-1).cpu())
            targets.append(batch.y.view(-1).cpu())
    pred, target = torch.cat(preds), torch.cat(targets)
    return (float((pred == target).float().mean()),
            macro_f1(pred, target, num_classes))


def train_epochs(model, name: str, seed: int, args, device,
                 train_epoch: Callable[[int], float],
                 evaluate: Callable[[], Dict[str, float]],
                 recorded: Sequence[str], shown: str = 'test_acc'):
    r"""Trains for ``args.epochs`` epochs. ``train_epoch(epoch)`` trains once
    over the data and returns the mean training loss; it alone is timed and
    memory-measured. ``evaluate()`` then returns the test metrics, of which
    those named in :obj:`recorded` go into the per-epoch history and
    :obj:`shown` onto the progress bar. Returns the history and the last
    metrics."""
    history = {'train_loss': [], **{key: [] for key in recorded},
               'epoch_s': [], 'peak_mb': []}
    bar = tqdm(range(args.epochs), desc=f'{name} seed {seed}', leave=False)
    for epoch in bar:
        model.train()
        with Timer(device) as timer, PeakMemory(device) as memory:
            loss = train_epoch(epoch)
        metrics = evaluate()
        history['train_loss'].append(loss)
        for key in recorded:
            history[key].append(metrics[key])
        history['epoch_s'].append(timer.seconds)
        history['peak_mb'].append(memory.peak_mb)
        bar.set_postfix(loss=f'{loss:.3f}', s=f'{timer.seconds:.1f}',
                        **{shown.removeprefix('test_'):
                           f'{metrics[shown]:.3f}'})
    return history, metrics


def run_record(name: str, seed: int, model: torch.nn.Module, history: dict,
               final: Dict[str, float]) -> dict:
    r"""One (model, seed) run as stored in the results: the final test
    metrics, the median epoch time and the peak memory."""
    # The first epoch includes warm-up (allocator, caches): time the others.
    timed = history['epoch_s'][1:] or history['epoch_s']
    return {'model': name, 'seed': seed, 'parameters': count_parameters(model),
            **final, 'epoch_s': sorted(timed)[len(timed) // 2],
            'peak_mb': max(history['peak_mb']), 'history': history}


def run_seeds(args, models: Sequence[str], run_one: Callable[[str, int], dict],
              describe: Callable[[dict], str]) -> List[dict]:
    r"""Runs ``run_one(name, seed)`` for every seed and model, printing
    ``describe(run)`` after each. The runs so far are saved after every run
    (``<out>/runs_partial.json``), so that a killed job leaves them behind;
    with ``--max-minutes``, no seed starts whose runs would end too late."""
    runs = []
    budget = RunBudget(args.max_minutes)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if not budget.allows_all(models):
            print(f'time budget reached: stopping before seed {seed}')
            break
        for name in models:
            run_start = time.time()
            run = run_one(name, seed)
            budget.record(name, time.time() - run_start)
            runs.append(run)
            write_json(os.path.join(args.out, 'runs_partial.json'),
                       {'args': vars(args), 'runs': runs})
            print(describe(run), flush=True)
    return runs


# --- reporting --------------------------------------------------------------
def run_line(run: dict, scores: Sequence[tuple], width: int = 16) -> str:
    r"""One run's line: the ``(label, key)`` scores, time, memory, size."""
    values = ' '.join(f'{label} {run[key]:.3f}' for label, key in scores)
    return (f"{run['model']:{width}s} seed {run['seed']}: {values} "
            f"{run['epoch_s']:.2f} s/epoch peak {run['peak_mb']:.0f} MB "
            f"({run['parameters']:,} parameters)")


def print_summary(summary: Dict[str, dict], columns: Sequence[tuple],
                  name_width: int = 16, params_width: int = 8) -> None:
    r"""The table of mean +- CI per model of the ``(title, key)`` columns,
    then mean seconds per epoch and peak MB."""
    titles = ' '.join(f'{title:>15s}' for title, _ in columns)
    print(f'\n{"model":{name_width}s} {"params":>{params_width}s} {titles} '
          f'{"s/epoch":>8s} {"peak MB":>8s}')
    for name, row in summary.items():
        cells = ' '.join(fmt(row[key]) for _, key in columns)
        print(f"{name:{name_width}s} {row['parameters']:{params_width},d} "
              f"{cells} {row['epoch_s']['mean']:8.2f} "
              f"{row['peak_mb']['mean']:8.0f}")


def save_results(args, device, start: float, summary: dict, runs: List[dict],
                 **extra) -> dict:
    r"""Writes ``<out>/results.json`` (arguments, device, threads,
    :obj:`extra`, wall time, summary, runs) and returns what it wrote."""
    payload = {'args': vars(args), 'device': str(device),
               'torch_threads': torch.get_num_threads(), **extra,
               'wall_s': time.time() - start, 'summary': summary,
               'runs': runs}
    write_json(os.path.join(args.out, 'results.json'), payload)
    return payload


def headline(summary: Dict[str, dict], key: str, label: str) -> str:
    r"""The last line: each model's mean :obj:`key`, one line to grep."""
    return ' '.join(f"{name} {label}={row[key]['mean']:.3f}"
                    for name, row in summary.items())
