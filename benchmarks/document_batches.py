r"""``hsa_attention`` forward+backward on real, nearly balanced batches: 8
loader batches of 32 documents of the 20 Newsgroups ``--quick`` subset (256
tokens, word tokenizer), 4 heads x 32, median of 5 passes over the 8. An A/B
of two checkouts (run alternately):

    python benchmarks/document_batches.py --repo /tmp/base
    python benchmarks/document_batches.py [--size-classes N]
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def quick_newsgroups():
    r"""The document example's ``--quick`` 20 Newsgroups training set (256
    tokens, word tokenizer, 1,000 documents), from ``$HSA_DATA``."""
    from hsa_graph import datasets
    return datasets.TwentyNewsgroups(
        root=os.environ.get('HSA_DATA', 'data'), split='train',
        max_tokens=256, vocab_size=10000, tokenizer='word',
        max_docs={'train': 1000, 'test': 500}, log=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repo', default=os.path.dirname(HERE))
    parser.add_argument('--size-classes', type=int, default=None)
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    from timing import median_ms
    sys.path.insert(0, args.repo)
    import torch
    torch.set_num_threads(2)
    from hsa_graph import hsa_attention
    from hsa_graph.loader import DataLoader
    docs = quick_newsgroups()
    options = {} if args.size_classes is None else dict(
        size_classes=args.size_classes)
    loader = DataLoader(docs, batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0), **options)
    batches = [batch for _, batch in zip(range(8), loader)]
    inputs = [tuple(torch.randn(b.num_nodes, 4, 32, requires_grad=True)
                    for _ in range(3)) for b in batches]

    def run():
        for batch, (q, k, v) in zip(batches, inputs):
            out = hsa_attention(q, k, v, layout=batch.layout)
            torch.autograd.grad(out.square().sum(), (q, k, v))

    name = 'main' if args.repo == os.path.dirname(HERE) else args.repo
    print(f'{name} | 8 batches {median_ms(run, reps=5):.1f} ms '
          f'({batches[0].layout})')


if __name__ == '__main__':
    main()
