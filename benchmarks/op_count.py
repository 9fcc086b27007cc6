r"""Counts the computing ATen ops (on CUDA: kernel launches) of one HSA
forward+backward step, views and allocations excluded, with torch.profiler.

    python benchmarks/op_count.py --leaves 4096
"""
import argparse
import os
import sys

import torch
from torch.profiler import profile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)

from attention import build_forest  # noqa: E402

from hsa_graph import hsa_attention, tree_layout  # noqa: E402

# Ops that only make views, allocate or dispatch to other ops.
NOT_COMPUTING = {
    'aten::view', 'aten::as_strided', 'aten::transpose', 'aten::unsqueeze',
    'aten::expand', 'aten::empty', 'aten::empty_like', 'aten::detach',
    'aten::alias', 'aten::reshape', 'aten::_reshape_alias', 'aten::t',
    'aten::select', 'aten::slice', 'aten::split', 'aten::split_with_sizes',
    'aten::unflatten', 'aten::permute', 'aten::resolve_conj',
    'aten::resolve_neg', 'aten::_unsafe_view', 'aten::lift_fresh',
    'aten::empty_strided', 'aten::result_type', 'aten::to', 'aten::_to_copy',
    'aten::flatten', 'aten::squeeze', 'aten::contiguous', 'aten::clone',
    'aten::zeros_like', 'aten::full_like', 'aten::ones_like',
    'aten::new_zeros', 'aten::new_full', 'aten::new_empty',
    'aten::sum_to_size'}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--leaves', type=int, default=4096)
    parser.add_argument('--branching', type=int, default=16)
    parser.add_argument('--ragged', action='store_true')
    args = parser.parse_args()
    tree = build_forest(args.leaves, args.branching, 1, args.ragged)
    layout = tree_layout(tree.edge_index, tree.num_nodes)
    q, k, v = (torch.randn(tree.num_nodes, 8, 64).requires_grad_()
               for _ in range(3))

    def step():
        out = hsa_attention(q, k, v, layout=layout)
        torch.autograd.grad(out.float().square().sum(), (q, k, v))

    step()
    with profile() as prof:
        step()
    leaves = [e for e in prof.events() if e.name.startswith('aten::') and
              not any(c.name.startswith('aten::') for c in e.cpu_children)]
    computing = [e for e in leaves if e.name not in NOT_COMPUTING]
    print(f'{args.leaves} leaves, b={args.branching}, '
          f"{'ragged' if args.ragged else 'balanced'}: {len(computing)} "
          f'computing ATen ops per forward+backward ({len(leaves)} leaf ATen '
          f'ops in all), {layout.num_levels} levels')


if __name__ == '__main__':
    main()
