r"""Shared plumbing of the 3-D examples (point_cloud_classification.py,
multimodal_classification.py, mesh_segmentation.py): seeding, metrics with
confidence intervals, peak-memory measurement, results JSON and learning
curves. Not part of the library; the models live in the example files."""
from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from typing import Dict, List, Optional, Sequence

import torch


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
