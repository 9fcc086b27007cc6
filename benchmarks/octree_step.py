r"""A/B of the point-cloud example's training step on real batches: 16
furniture clouds of 2,048 points as octrees (leaf size 16, the example's
defaults: 64 channels, 4 heads, 2 layers), the loader's layout, forward +
backward + Adam step, median of timed steps. Run it on two checkouts in turn:

    git worktree add /tmp/base <commit>
    python benchmarks/octree_step.py --repo /tmp/base
    python benchmarks/octree_step.py

Prints ``repo | step ms | attention-only ms`` (the attention: one
``hsa_attention`` forward+backward on the batch at 4 x 16).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repo', default=os.path.dirname(HERE))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--steps', type=int, default=7)
    parser.add_argument('--size-classes', type=int, default=None,
                        help="the loader's size_classes (default: its own)")
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    from timing import median_ms
    sys.path.insert(0, args.repo)
    sys.path.insert(0, os.path.join(args.repo, 'examples'))
    import torch
    torch.set_num_threads(args.threads)
    import point_cloud_classification as pc
    from hsa_graph import hsa_attention
    from hsa_graph.datasets import SweetHome3DFurniture
    from hsa_graph.loader import DataLoader
    root = os.path.join(os.environ.get('HSA_DATA', 'data'), 'furniture')
    clouds = SweetHome3DFurniture(root, 'train', num_points=2048)
    items = [pc.octree_input(clouds[i].pos, clouds[i].y.view(1), 16)
             for i in range(16)]
    options = {} if args.size_classes is None else dict(
        size_classes=args.size_classes)
    batch = next(iter(DataLoader(items, batch_size=16, **options)))
    torch.manual_seed(0)
    model = pc.HSAPointClassifier(64, 2, 4, 10, 0.0)
    optimizer = torch.optim.Adam(model.parameters())

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
        loss.backward()
        optimizer.step()

    q, k, v = (torch.randn(batch.num_nodes, 4, 16, requires_grad=True)
               for _ in range(3))

    def attention():
        out = hsa_attention(q, k, v, layout=batch.layout)
        torch.autograd.grad(out.square().sum(), (q, k, v))

    name = 'main' if args.repo == os.path.dirname(HERE) else args.repo
    print(f'{name} | step {median_ms(step, args.steps, 2):.0f} ms | '
          f'attention {median_ms(attention, args.steps, 2):.1f} ms '
          f'({batch.layout})', flush=True)


if __name__ == '__main__':
    main()
