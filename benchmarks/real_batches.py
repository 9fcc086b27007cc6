r"""Forward+backward time of ``hsa_attention`` on batches of real hierarchies
(16 furniture octrees of 1,024 points; 16 documents of 20 Newsgroups), the
trees the examples train on, 8 heads x 64 channels, float32.

    python benchmarks/real_batches.py --threads 2

Run it on two commits (``git worktree add``) to compare code states on the
same data; the printed median is over ``--batches`` DataLoader-style batches
x ``--reps`` steps each.
"""
import argparse
import os
import statistics
import sys

import torch
from torch_geometric.data import Batch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)

from recompiles import furniture, text  # noqa: E402
from timing import step_times  # noqa: E402

from hsa_graph import hsa_attention, tree_layout  # noqa: E402


def median_step_ms(hierarchies, batches, batch_size, reps):
    times = []
    for i in range(batches):
        batch = Batch.from_data_list(
            hierarchies[i * batch_size:(i + 1) * batch_size])
        layout = tree_layout(batch.edge_index, batch.num_nodes,
                             dtype=torch.float32)
        gen = torch.Generator().manual_seed(i)
        q, k, v = (torch.randn(batch.num_nodes, 8, 64, generator=gen)
                   .requires_grad_() for _ in range(3))

        def step():
            out = hsa_attention(q, k, v, layout=layout)
            torch.autograd.grad(out.square().sum(), (q, k, v))
        times += step_times(step, reps)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batches', type=int, default=4)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--reps', type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, load in [('furniture-1024', lambda: furniture(1024)),
                       ('20newsgroups', lambda: text('20newsgroups'))]:
        ms = median_step_ms(load(), args.batches, args.batch_size, args.reps)
        print(f'{name}: median forward+backward {ms:.1f} ms '
              f'(batches of {args.batch_size}, {args.threads} threads)')


if __name__ == '__main__':
    main()
