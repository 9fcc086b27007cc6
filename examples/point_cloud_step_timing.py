r"""Training-step time and peak memory of the three point-cloud models of
point_cloud_classification.py as the number of points grows: HSA on octrees,
the same encoder on a flat tree (exact softmax attention), and TransformerConv
on a kNN graph. One batch of real furniture clouds, warm-up steps first, then
the median of timed steps (forward, backward, optimizer step).

    python examples/point_cloud_step_timing.py --points 512 1024 2048 4096
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_cloud_classification as pc  # noqa: E402
from shape_utils import PeakMemory, Timer, write_json  # noqa: E402

from hsa_graph.datasets import SweetHome3DFurniture  # noqa: E402
from hsa_graph.sampling import knn_graph  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--points', type=int, nargs='+',
                        default=[512, 1024, 2048, 4096])
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--max-flat-gb', type=float, default=6.0,
                        help='skip flat attention when its attention '
                             'matrices alone would exceed this')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                        else 'cpu')
    parser.add_argument('--out', default='runs/point_cloud_step_timing')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    root = os.path.join(os.environ.get('HSA_DATA', 'data'), 'furniture')
    points = SweetHome3DFurniture(root, 'train', num_points=4096
                                  if max(args.points) > 2048 else 2048)
    clouds = [points[i] for i in range(args.batch_size)]
    rows = []
    for n in args.points:
        for name in pc.MODELS:
            attention_gb = args.batch_size * 4 * n * n * 4 / 2**30
            if name == 'hsa-flat' and 3 * attention_gb > args.max_flat_gb:
                print(f'{name:16s} {n:5d} points: skipped (~'
                      f'{3 * attention_gb:.0f} GB of attention)', flush=True)
                continue
            items = []
            for d in clouds:
                pos, y = d.pos[:n], d.y.view(1)
                if name == 'hsa-octree':
                    items.append(pc.octree_input(pos, y, 16))
                elif name == 'hsa-flat':
                    items.append(pc.flat_input(pos, y))
                else:
                    items.append(pc.knn_input(pos, y, knn_graph(pos, 16)))
            batch = Batch.from_data_list(items).to(device)
            torch.manual_seed(0)
            cls = (pc.KNNTransformerClassifier if name == 'knn-transformer'
                   else pc.HSAPointClassifier)
            model = cls(64, 2, 4, 10, 0.1).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

            def step():
                loss = F.cross_entropy(model(batch), batch.y.view(-1))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            for _ in range(args.warmup):
                step()
            times = []
            with PeakMemory(device) as memory:
                for _ in range(args.steps):
                    with Timer(device) as timer:
                        step()
                    times.append(timer.seconds)
            row = {'model': name, 'points': n,
                   'batch_size': args.batch_size,
                   'step_s': statistics.median(times),
                   'peak_mb': memory.peak_mb}
            rows.append(row)
            print(f"{name:16s} {n:5d} points: {row['step_s'] * 1000:8.1f} ms"
                  f"/step, peak {row['peak_mb']:7.0f} MB", flush=True)
    write_json(os.path.join(args.out, 'results.json'),
               {'args': vars(args), 'device': str(device),
                'time': time.strftime('%Y-%m-%d %H:%M:%S'), 'rows': rows})
    return {'rows': rows}


if __name__ == '__main__':
    main()
