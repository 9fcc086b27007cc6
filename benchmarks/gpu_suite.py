r"""Every GPU check of hsa_graph in one script, for a few lent minutes on a GPU:

1. parity: CUDA float32 (and bfloat16) against the CPU float64 dense reference
   on random ragged trees, both include_self values, with positions;
2. determinism: repeated runs bitwise equal under
   torch.use_deterministic_algorithms(True);
3. compile: zero graph breaks, and recompiles across different trees with
   dynamic=True;
4. benchmarks (bf16 and fp32, 8 heads x 64, branching 16, forward+backward):
   HSA eager / compiled / CUDA graphs against SDPA (Flash) and PyG layers.

Usage: python benchmarks/gpu_suite.py --out DIR   (writes DIR/gpu_*.json)
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(__file__))

from hsa_graph import Hierarchy, hsa_attention, hsa_attention_matrix  # noqa
from hsa_graph import tree_layout  # noqa
from hsa_graph.datasets.fake import ragged_parent  # noqa
from hsa_graph.testing import random_parent  # noqa
import attention as bench  # noqa

REPORT = {}
DEVICE = 'cuda'


def section(name):
    def wrap(fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                REPORT[name] = fn(*args, **kwargs)
            except Exception as exc:  # keep going: one failure must not eat the budget
                REPORT[name] = {'error': repr(exc),
                                'trace': traceback.format_exc()[-3000:]}
            REPORT[name + '_seconds'] = time.perf_counter() - start
            print(name, json.dumps(REPORT[name], default=str)[:2000],
                  flush=True)
        return run
    return wrap


@section('parity')
def parity():
    gen = torch.Generator().manual_seed(0)
    worst = {'float32': 0.0, 'bfloat16': 0.0}
    for trial in range(20):
        parent = random_parent(5 + 3 * trial, gen)
        h = Hierarchy.from_parent(parent)
        n = h.num_nodes
        q, k, v = (torch.randn(n, 4, 8, dtype=torch.float64, generator=gen)
                   for _ in range(3))
        pos = torch.randn(n, 3, dtype=torch.float64, generator=gen)
        for include_self in (False, True):
            theta = hsa_attention_matrix(q, k, h.edge_index, pos=pos,
                                         include_self=include_self)
            ref = torch.einsum('hij,jhc->ihc', theta, v)
            leaf = h.is_leaf
            for name, dtype in (('float32', torch.float32),
                                ('bfloat16', torch.bfloat16)):
                out = hsa_attention(*(t.to(DEVICE, dtype) for t in (q, k, v)),
                                    h.edge_index.to(DEVICE),
                                    pos=pos.to(DEVICE, dtype),
                                    include_self=include_self)
                assert torch.isfinite(out).all()
                err = (out.double().cpu()[leaf] - ref[leaf]).abs().max()
                worst[name] = max(worst[name], float(err))
    assert worst['float32'] < 1e-4, worst
    # bfloat16 level tensors, float32 logits (precision.py): on CPU 0.02
    assert worst['bfloat16'] < 5e-2, worst
    from hsa_graph.functional.precision import _bmm_out_dtype_works
    return {'max_abs_err_vs_cpu_float64': worst, 'trees': 20,
            'bf16_logits_by_bmm_out_dtype': _bmm_out_dtype_works(
                torch.device(DEVICE), torch.bfloat16)}


@section('determinism')
def determinism():
    parent = ragged_parent(20000, 16, torch.Generator().manual_seed(1))
    h = Hierarchy.from_parent(parent, validate=False)
    layout = tree_layout(h.edge_index.to(DEVICE), h.num_nodes,
                         dtype=torch.float32)
    n = h.num_nodes
    torch.manual_seed(0)
    q, k, v = (torch.randn(n, 8, 64, device=DEVICE, requires_grad=True)
               for _ in range(3))

    def run():
        out = hsa_attention(q, k, v, layout=layout)
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        return [out.detach()] + list(grads)

    nondeterministic = run()
    differs_default = any(not torch.equal(a, b) for a, b in
                          zip(nondeterministic, run()))
    torch.use_deterministic_algorithms(True)
    try:
        first = run()
        same = all(torch.equal(a, b) for _ in range(3)
                   for a, b in zip(first, run()))
    finally:
        torch.use_deterministic_algorithms(False)
    return {'bitwise_equal_deterministic_mode': same,
            'differs_without_it': differs_default}


@section('compile')
def compile_checks():
    import torch._dynamo
    from hsa_graph.nn import HSAConv
    from hsa_graph.testing import assert_no_graph_breaks
    gen = torch.Generator().manual_seed(2)
    conv = HSAConv(32, 16, heads=4).to(DEVICE)
    parent = ragged_parent(300, 8, gen)
    h = Hierarchy.from_parent(parent, x=torch.randn(parent.numel(), 32)).to(DEVICE)
    layout = h.layout
    assert_no_graph_breaks(lambda x: conv(x, h.edge_index, layout=layout),
                           h.x)
    torch._dynamo.reset()
    counts = torch._dynamo.utils.counters
    counts.clear()
    compiled = torch.compile(conv, dynamic=True)
    errors = []
    for size in (300, 301, 420, 500):   # different trees, same level count
        parent = ragged_parent(size, 8, torch.Generator().manual_seed(size))
        h = Hierarchy.from_parent(parent,
                                  x=torch.randn(parent.numel(), 32)).to(DEVICE)
        layout = h.layout       # recompiles only per height

        out = compiled(h.x, h.edge_index, layout=layout)
        ref = conv(h.x, h.edge_index, layout=layout)
        errors.append(float((out - ref).abs().max()))
    return {'graph_breaks': 0,
            'frames_compiled':
            dict(counts['stats']).get('unique_graphs', None),
            'max_err_compiled_vs_eager': max(errors)}


def run_benchmarks(out_dir, short=False):
    class Args:
        pass
    results = []
    for dtype in (('bfloat16', ) if short else ('bfloat16', 'float32')):
        args = Args()
        args.device, args.dtype, args.heads, args.channels = \
            'cuda', dtype, 8, 64
        args.backward, args.warmup, args.reps, args.budget = True, 2, 7, \
            (1.0 if short else 3.0)
        plan = [('hsa', 4096, 1, False), ('sdpa', 4096, 1, False),
                ('tconv_knn', 4096, 1, False), ('gps', 4096, 1, False),
                ('hsa', 16384, 1, False), ('sdpa', 16384, 1, False),
                ('hsa', 65536, 1, False), ('hsa', 65536, 1, True),
                ('sdpa', 65536, 1, False), ('tconv_knn', 65536, 1, False),
                ('hsa', 4096, 8, False), ('sdpa', 4096, 8, False),
                ('hsa', 1048576, 1, False), ('hsa', 1048576, 1, True)]
        if short:
            plan = [('hsa', 4096, 1, False), ('sdpa', 4096, 1, False),
                    ('hsa', 65536, 1, False), ('sdpa', 65536, 1, False),
                    ('hsa', 65536, 1, True), ('hsa', 1048576, 1, False),
                    ('hsa', 4096, 8, False), ('sdpa', 4096, 8, False),
                    ('tconv_knn', 65536, 1, False),
                    ('hsa_compiled', 65536, 1, False),
                    ('hsa_compiled', 4096, 1, False),
                    ('hsa_graphs', 4096, 1, False)]
        elif dtype == 'bfloat16':
            plan += [('hsa_compiled', 4096, 1, False),
                     ('hsa_graphs', 4096, 1, False),
                     ('hsa_compiled', 65536, 1, False),
                     ('hsa_compiled', 1048576, 1, False)]
        for method, leaves, batch, ragged in plan:
            try:
                result = bench.measure(args, method, leaves, 16, batch, ragged)
            except Exception as exc:
                result = dict(method=method, leaves=leaves, batch=batch,
                              ragged=ragged, dtype=dtype, error=repr(exc))
                torch.cuda.empty_cache()
            results.append(result)
            print(json.dumps(result), flush=True)
            with open(os.path.join(out_dir, 'gpu_benchmarks.json'), 'w') as f:
                json.dump(dict(info=dict(gpu=torch.cuda.get_device_name(),
                                         torch=torch.__version__),
                               results=results), f, indent=1)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', default='.')
    parser.add_argument('--skip-bench', action='store_true')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--short', action='store_true',
                        help='bf16 only, fewer cases, no compile checks')
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    os.makedirs(args.out, exist_ok=True)
    print(torch.__version__, DEVICE, flush=True)
    parity()
    determinism()
    if not args.short:
        compile_checks()
    with open(os.path.join(args.out, 'gpu_checks.json'), 'w') as f:
        json.dump(REPORT, f, indent=1, default=str)
    if not args.skip_bench:
        run_benchmarks(args.out, short=args.short)


if __name__ == '__main__':
    main()
