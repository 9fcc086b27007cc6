r"""One very wide family beside many small ones at one depth (the case
docs/reliability.md describes): 100 families of 2 leaves, one family of
1,000 leaves, and the two together under one root, forward+backward of
``hsa_attention`` (1 thread, float32, 4 heads x 32), median of 5 runs.

    python benchmarks/wide_family.py [--repo CHECKOUT]
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repo', default=os.path.dirname(HERE))
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    from timing import median_ms
    sys.path.insert(0, args.repo)
    import torch
    torch.set_num_threads(1)
    from hsa_graph import Hierarchy, hsa_attention, tree_layout

    def tree(small, wide):
        # root -> (one node per family) -> leaves
        parent = [-1] + [0] * (small + wide)
        sizes = [2] * small + [1000] * wide
        for family, size in enumerate(sizes, start=1):
            parent += [family] * size
        return Hierarchy.from_parent(parent)

    results = []
    for name, (small, wide) in [('100 x 2', (100, 0)), ('1 x 1000', (0, 1)),
                                ('both', (100, 1))]:
        h = tree(small, wide)
        layout = tree_layout(h.edge_index, h.num_nodes, dtype=torch.float32)
        q, k, v = (torch.randn(h.num_nodes, 4, 32, requires_grad=True)
                   for _ in range(3))

        def step():
            out = hsa_attention(q, k, v, layout=layout)
            torch.autograd.grad(out.square().sum(), (q, k, v))

        results.append(f'{name} {median_ms(step, reps=5):.1f} ms')
    print(' | '.join(results))


if __name__ == '__main__':
    main()
