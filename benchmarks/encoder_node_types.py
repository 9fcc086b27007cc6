r"""HSAEncoderLayer with several node types: eager per-type rows against the
masked all-rows form that torch.compile uses (one layer, forward+backward).

    python benchmarks/encoder_node_types.py --channels 64 256 --threads 1
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from timing import median_ms  # noqa: E402

from hsa_graph import Hierarchy  # noqa: E402
from hsa_graph.datasets.fake import balanced_parent  # noqa: E402
from hsa_graph.nn import HSAEncoderLayer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--channels', type=int, nargs='+', default=[64, 256])
    parser.add_argument('--leaves', type=int, default=8192)
    parser.add_argument('--types', type=int, default=3)
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h = Hierarchy.from_parent(balanced_parent(args.leaves, 16))
    node_type = torch.randint(0, args.types, (h.num_nodes, ))
    compiling = torch.compiler.is_compiling
    for channels in args.channels:
        layer = HSAEncoderLayer(channels, heads=4, num_node_types=args.types,
                                dropout=0.0)
        x = torch.randn(h.num_nodes, channels, requires_grad=True)

        def step():
            layer(x, h.edge_index, node_type=node_type).sum().backward()

        eager = median_ms(step, args.reps)
        torch.compiler.is_compiling = lambda: True   # the masked form
        try:
            masked = median_ms(step, args.reps)
        finally:
            torch.compiler.is_compiling = compiling
        print(f'channels {channels}: {h.num_nodes} nodes, {args.types} types: '
              f'per-type rows {eager:.1f} ms, masked all rows {masked:.1f} ms')


if __name__ == '__main__':
    main()
