r"""Seconds to compile ``HSAConv`` forward+backward with
``torch.compile(fullgraph=True, dynamic=True, backend='aot_eager')`` (which
traces the backward too, as Inductor would, without code generation) over the
first 3 loader batches of ``FakeHierarchyDataset(200, avg_num_leaves=40)``
(batches of 8, duck shaping off), cumulative after each batch:

    python benchmarks/compile_time.py [--repo CHECKOUT] [--size-classes N]
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repo', default=os.path.dirname(HERE))
    parser.add_argument('--size-classes', type=int, default=None)
    parser.add_argument('--batches', type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, args.repo)
    import torch
    import torch.fx.experimental._config as shape_config
    from hsa_graph.datasets.fake import FakeHierarchyDataset
    from hsa_graph.loader import DataLoader
    from hsa_graph.nn import HSAConv
    torch.manual_seed(0)
    conv = HSAConv(16, 8, heads=2)

    def forward(x, edge_index, layout):
        return conv(x, edge_index, layout=layout)

    compiled = torch.compile(forward, fullgraph=True, dynamic=True,
                             backend='aot_eager')
    options = {} if args.size_classes is None else dict(
        size_classes=args.size_classes)
    loader = DataLoader(FakeHierarchyDataset(200, avg_num_leaves=40),
                        batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0), **options)
    start, seconds = time.perf_counter(), []
    with shape_config.patch(use_duck_shape=False):
        for _, batch in zip(range(args.batches), loader):
            x = batch.x.detach().requires_grad_()
            out = compiled(x, batch.edge_index, batch.layout)
            torch.autograd.grad(out.square().sum(), x)
            seconds.append(f'{time.perf_counter() - start:.1f}')
    print(f'seconds after each batch: {" ".join(seconds)}')


if __name__ == '__main__':
    main()
