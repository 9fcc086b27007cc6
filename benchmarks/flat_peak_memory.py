r"""Peak resident memory of ``hsa_attention`` forward+backward on the flat
baseline's packed batches (20 Newsgroups ``--quick`` subset flattened, as the
document example's flat model sees them; batches of 32, 4 heads x 64,
``include_self``): the process's peak before and after 20 such steps. Run it
on two checkouts for an A/B that is not drowned by a training run's noise:

    python benchmarks/flat_peak_memory.py [--repo /tmp/base]
"""
import argparse
import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repo', default=os.path.dirname(HERE))
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    sys.path.insert(0, args.repo)
    import torch
    torch.set_num_threads(2)
    from document_batches import quick_newsgroups
    from hsa_graph import flatten_hierarchy, hsa_attention
    from hsa_graph.loader import DataLoader
    loader = DataLoader([flatten_hierarchy(d) for d in quick_newsgroups()],
                        batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    packed = [b for b in loader if not b.layout.levels[1].padded][:20]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for batch in packed:
        q, k, v = (torch.randn(batch.num_nodes, 4, 64, requires_grad=True)
                   for _ in range(3))
        out = hsa_attention(q, k, v, layout=batch.layout, include_self=True)
        torch.autograd.grad(out.square().sum(), (q, k, v))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    name = 'main' if args.repo == os.path.dirname(HERE) else args.repo
    print(f'{name} | {len(packed)} packed batches | peak {before // 1024} -> '
          f'{after // 1024} MB')


if __name__ == '__main__':
    main()
