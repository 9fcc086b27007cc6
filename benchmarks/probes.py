r"""Small measurements quoted in the docs, one subcommand each:

    python benchmarks/probes.py alloc    # writing into a new vs an existing 32 MB tensor
    python benchmarks/probes.py saved    # bytes saved for backward by hsa_attention at 16k leaves
    python benchmarks/probes.py layout   # tree_layout build time for typical batches
    python benchmarks/probes.py gather   # gathering a level of a batch: index_select vs indexing
    python benchmarks/probes.py peak     # peak live tensor bytes of a step (device-independent)
    python benchmarks/probes.py hugepages  # a fresh 64 MiB tensor, plain vs new_buffer (huge pages)
    python benchmarks/probes.py strided  # per-head bmm on node-order views vs one batched bmm
    python benchmarks/probes.py half     # half-precision error, float32 vs rounded logits
    python benchmarks/probes.py buckets --threads 2  # family bucketing: CUDA's rule vs CPU's, by bucket cost
    python benchmarks/probes.py moves --threads 2    # node <-> level moves by index: whole view vs head by head
"""
import argparse
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)

from attention import build_forest  # noqa: E402
from timing import median_ms  # noqa: E402

from hsa_graph import hsa_attention, tree_layout  # noqa: E402


def alloc():
    q = torch.randn(8, 16384, 64)                 # exactly 32 MB of float32
    out = torch.empty_like(q)
    print(f'q * q into a new tensor: {median_ms(lambda: q * q, reps=20):.1f} ms; '
          f'into an existing one: '
          f'{median_ms(lambda: torch.mul(q, q, out=out), reps=20):.1f} ms')


def saved():
    for branching in (16, 64):
        tree = build_forest(16384, branching, 1, False)
        layout = tree_layout(tree.edge_index, tree.num_nodes)
        q, k, v = (torch.randn(tree.num_nodes, 8, 64).requires_grad_()
                   for _ in range(3))
        storages = {}

        def pack(t):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            hsa_attention(q, k, v, layout=layout)
        print(f'b={branching}: {sum(storages.values()) / 2**20:.1f} MB saved '
              f'for backward (distinct storages, inputs included)')


def layout():
    for leaves, batch, ragged in [(1024, 16, True), (4096, 1, False),
                                  (65536, 1, True)]:
        tree = build_forest(leaves, 16, batch, ragged)
        ms = median_ms(lambda: tree_layout(tree.edge_index, tree.num_nodes,
                                           cache=False), reps=3)
        print(f"{batch} x {leaves} leaves, {'ragged' if ragged else 'balanced'}"
              f' ({tree.num_nodes} nodes): {ms:.1f} ms')


def gather():
    # A batch of 8 trees of 4,096 leaves: 34,952 nodes; one level of 128
    # rows and the leaf level of 32,768, gathered head-major from the
    # [N, H, C] rows as the level passes do.
    rows = torch.randn(34952, 8, 64).transpose(0, 1)     # strided view
    gen = torch.Generator().manual_seed(0)
    for size in (128, 32768):
        ids = torch.randperm(34952, generator=gen)[:size]
        for name, fn in [('index_select', lambda: rows.index_select(1, ids)),
                         ('indexing', lambda: rows[:, ids])]:
            fn()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            ms = median_ms(fn, reps=10)
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt -
                      faults) / 11
            print(f'{size:6d}-row level, {name:12s}: {ms:6.2f} ms, '
                  f'{faults:8.0f} page faults per call')


class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    r"""Tracks the bytes of tensor storages created inside the mode and
    still alive: the peak is what a caching GPU allocator must hold at
    least (``torch.cuda.max_memory_allocated`` minus the inputs), measured
    on any device. The storages of :obj:`inputs` are not counted (views of
    them are op outputs too)."""

    def __init__(self, inputs=()):
        super().__init__()
        self.live, self.peak, self.seen = 0, 0, set()
        self.inputs = {t.untyped_storage().data_ptr() for t in inputs}

    def _free(self, key, nbytes):
        self.seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import weakref
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self.seen or key in self.inputs or \
                    storage.nbytes() == 0:
                continue
            self.seen.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, storage.nbytes())
        return out


def peak():
    for leaves, dtype, ragged in [(16384, torch.float32, False),
                                  (65536, torch.float32, False),
                                  (65536, torch.bfloat16, False),
                                  (65536, torch.float32, True)]:
        tree = build_forest(leaves, 16, 1, ragged)
        layout = tree_layout(tree.edge_index, tree.num_nodes)
        q, k, v = (torch.randn(tree.num_nodes, 8, 64).to(dtype)
                   .requires_grad_() for _ in range(3))
        unit = tree.num_nodes * 8 * 64 * q.element_size()
        grad_out = torch.randn_like(q)    # an input, as in a training step
        mode = _LiveBytes((q, k, v, grad_out))
        with mode:
            out = hsa_attention(q, k, v, layout=layout)
            grads = torch.autograd.grad(out, (q, k, v), grad_out)
            del out, grads
        # With q, k, v and the output's gradient: what a step holds in all.
        total = mode.peak + 4 * unit
        print(f"{leaves} leaves, {'ragged' if ragged else 'balanced'}, "
              f'{str(dtype)[6:]}: peak {mode.peak / 2**20:.0f}'
              f' MiB beyond the inputs = {mode.peak / unit:.1f} x one'
              f' [N, 8, 64] input; 1,048,576 leaves by proportion: '
              f'{mode.peak / 2**30 * 1048576 / leaves:.1f} GiB, with q, k, v'
              f' and d out: {total / 2**30 * 1048576 / leaves:.1f} GiB')


def hugepages():
    from hsa_graph.allocator import new_buffer
    like = torch.zeros(1)
    for name, make in [('torch.empty', lambda: torch.empty(8, 32768, 64)),
                       ('new_buffer', lambda: new_buffer(like, (8, 32768, 64)))]:
        make().fill_(1.0)          # first use (the kernel may compact once)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(10):
            make().fill_(1.0)
        ms = (time.perf_counter() - start) * 100
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt -
                  faults) // 10
        print(f'fresh [8, 32768, 64] float32 via {name:11s}: written in '
              f'{ms:5.1f} ms, {faults:6d} page faults')


def strided():
    families, size, heads, channels = 4096, 16, 8, 64
    q = torch.randn(families * size, heads, channels)
    k = torch.randn(families * size, heads, channels)
    q_blocks = q.transpose(0, 1).reshape(heads * families, size, channels)
    k_blocks = k.transpose(0, 1).reshape(heads * families, size, channels)
    grad = torch.randn(heads, families, size, size)
    logits = torch.empty(heads, families, size, size)
    dq = torch.empty_like(q)

    def node_order_logits():   # strided views of node-order rows, per head
        qv, kv = q.view(families, size, heads, channels), \
            k.view(families, size, heads, channels)
        for h in range(heads):
            logits[h].baddbmm_(qv[:, :, h], kv[:, :, h].transpose(1, 2),
                               beta=0)

    def node_order_grad():     # strided output rows, per head
        kv, out = k.view(families, size, heads, channels), \
            dq.view(families, size, heads, channels)
        for h in range(heads):
            torch.bmm(grad[h], kv[:, :, h], out=out[:, :, h])
    cases = [
        ('logits, one batched bmm', lambda: torch.bmm(
            q_blocks, k_blocks.transpose(1, 2))),
        ('logits, per head on node order', node_order_logits),
        ('d q, one batched bmm', lambda: torch.bmm(
            grad.view(-1, size, size), k_blocks)),
        ('d q, per head into node order', node_order_grad)]
    for name, fn in cases:
        fn()
        start = time.perf_counter()
        for _ in range(10):
            fn()
        print(f'{name:32s}: {(time.perf_counter() - start) * 100:6.1f} ms')


def half():
    import hsa_graph.functional.sibling_softmax as softmax
    from hsa_graph import Hierarchy, hsa_attention
    from hsa_graph.functional.precision import stat_dtype
    parent = [-1] + [0] * 4 + [1 + i // 32 for i in range(128)]
    h = Hierarchy.from_parent(parent)

    def worst():
        errors = {}
        for seed in range(4):
            gen = torch.Generator().manual_seed(seed)
            q, k = (2 * torch.randn(h.num_nodes, 2, 32, generator=gen)
                    for _ in range(2))
            v = torch.randn(h.num_nodes, 2, 32, generator=gen)
            for dtype in (torch.bfloat16, torch.float16):
                for include_self in (False, True):
                    low = [t.to(dtype) for t in (q, k, v)]
                    out = hsa_attention(*low, h.edge_index,
                                        include_self=include_self)
                    ref = hsa_attention(*(t.double() for t in low),
                                        h.edge_index,
                                        include_self=include_self)
                    err = float((out.double() - ref).abs().max() /
                                ref.abs().max())
                    name = str(dtype)[6:]
                    errors[name] = max(errors.get(name, 0.0), err)
        return errors
    print('float32 logits (the code):', worst())
    kept = softmax.bmm_stat
    softmax.bmm_stat = lambda left, right, scale: (
        torch.bmm(left, right) * scale).to(stat_dtype(left.dtype))
    try:
        print('logits rounded to the input dtype:', worst())
    finally:
        softmax.bmm_stat = kept


def buckets():
    # Ragged forests (and one balanced), fwd+bwd with the same q, k, v under
    # layouts that differ only in how families are bucketed; the policies
    # alternate within each repetition, so machine noise hits them alike.
    from hsa_graph.layout import Bucketing, _build, parent_from_edge_index
    policies = {'cuda rule (8 exact, then powers of 2)': Bucketing(),
                **{f'bucket_cost={cost:g}': Bucketing(cost)
                   for cost in (500.0, 2000.0, 8000.0)}}
    for leaves, batch, ragged in [(4096, 1, True), (4096, 8, True),
                                  (16384, 1, True), (4096, 8, False)]:
        tree = build_forest(leaves, 16, batch, ragged)
        parent = parent_from_edge_index(tree.edge_index, tree.num_nodes)
        layouts = {name: _build(parent, tree.num_nodes, policy)
                   for name, policy in policies.items()}
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(tree.num_nodes, 8, 64, generator=gen)
                   .requires_grad_() for _ in range(3))
        grad = torch.randn_like(q)
        times = {name: [] for name in layouts}
        for _ in range(5):
            for name, layout in layouts.items():
                times[name].append(median_ms(lambda: torch.autograd.grad(
                    hsa_attention(q, k, v, layout=layout), (q, k, v), grad),
                    reps=1, warmup=0))
        kind = 'ragged' if ragged else 'balanced'
        print(f'{leaves} x {batch} {kind}:', ', '.join(
            f'{name} {sorted(t)[2]:.0f} ms ({len((l.aligned or l).buckets)} '
            f'buckets)' for (name, t), l in zip(times.items(),
                                                layouts.values())))


def moves():
    # A batch of 8 ragged trees of 4,096 leaves with shuffled node ids, so
    # that the levels are gathered by index (no runs of consecutive ids):
    # moving a [N, 8, 64] tensor into levels and back, as the level moves
    # did before (one index over the whole head-major view; index_copy_ of
    # each level's transposed rows) and as they do now (head by head).
    from hsa_graph.functional.level_order import (_gather_levels,
                                                  _level_index,
                                                  _scatter_levels)
    tree = build_forest(4096, 16, 8, True)
    perm = torch.randperm(tree.num_nodes,
                          generator=torch.Generator().manual_seed(0))
    edge_index = perm[tree.edge_index]
    layout = tree_layout(edge_index, tree.num_nodes, cache=False)
    layout = layout.aligned or layout
    plan = _level_index(layout)
    assert plan.ids is not None and plan.virtual_from is not None
    rows = torch.randn(tree.num_nodes, 8, 64)
    head_major = rows.transpose(0, 1)
    real = [None if level.stand_in_rows is None else
            (level.node_ids < tree.num_nodes).nonzero().flatten()
            for level in layout.levels]

    def whole_view_gather():
        out = []
        for level, ids, rr in zip(layout.levels, plan.ids, real):
            if rr is None:
                out.append(head_major[:, ids])
            else:
                piece = head_major.new_zeros((8, level.size, 64))
                piece[:, rr] = head_major[:, ids[rr]]
                out.append(piece)
        return out
    pieces = _gather_levels(rows, plan, rows.dtype)
    assert all(torch.equal(a, b) for a, b in zip(pieces,
                                                 whole_view_gather()))

    def whole_view_scatter():
        out = torch.empty_like(rows)
        for piece, ids, rr in zip(pieces, plan.ids, real):
            piece = piece.transpose(0, 1)
            if rr is not None:
                piece, ids = piece[rr], ids[rr]
            out.index_copy_(0, ids, piece)
        return out
    assert torch.equal(_scatter_levels(pieces, plan), whole_view_scatter())
    for name, fn in [('gather, whole view', whole_view_gather),
                     ('gather, head by head',
                      lambda: _gather_levels(rows, plan, rows.dtype)),
                     ('scatter, whole view', whole_view_scatter),
                     ('scatter, head by head',
                      lambda: _scatter_levels(pieces, plan))]:
        print(f'{name:22s}: {median_ms(fn, reps=9):6.1f} ms')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('probe', choices=['alloc', 'saved', 'layout', 'gather', 'peak',
                                          'hugepages', 'strided', 'half',
                                          'buckets', 'moves'])
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    globals()[args.probe]()


if __name__ == '__main__':
    main()
