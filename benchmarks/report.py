r"""Turns benchmark JSON files (from attention.py or gpu_suite.py) into a
markdown table (printed) and a log-log PNG of time and memory against leaves.

    python benchmarks/report.py benchmarks/results/cpu_attention.json --png docs/img/perf_cpu.png
"""
import argparse
import json
from collections import defaultdict


def key(r):
    return (r['batch'], r['leaves'], r.get('branching'), r.get('dtype'))


def table(results):
    flat = {}
    for r in results:
        if r.get('method') == 'sdpa' and 'median_s' in r:
            flat[(r['batch'], r['leaves'], r.get('dtype'))] = r
    lines = ['| method | tree | batch | leaves | b | dtype | median ms | x faster than SDPA '
             '| peak MiB | peak / SDPA | achieved GFLOP/s | page faults / step |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in sorted(results, key=lambda r: (r.get('dtype', ''), r['batch'],
                                            r['leaves'], r['method'],
                                            r.get('ragged', False),
                                            r.get('branching') or 0)):
        if 'median_s' not in r:
            lines.append(f"| {r['method']} | | {r['batch']} | {r['leaves']} | "
                         f"| {r.get('dtype')} | {r.get('error', 'failed')[:60]} "
                         f"| | | | | |")
            continue
        base = flat.get((r['batch'], r['leaves'], r.get('dtype')))
        speed = f"{base['median_s'] / r['median_s']:.1f}" if base else 'n/a'
        mem = (f"{r['peak_bytes'] / max(base['peak_bytes'], 1):.2f}"
               if base and base['peak_bytes'] > 0 else 'n/a')
        tree = ('flat' if r['method'] in ('sdpa', 'sdpa_math', 'gps')
                else 'kNN' if r['method'] == 'tconv_knn'
                else 'ragged' if r.get('ragged') else 'balanced')
        lines.append(
            f"| {r['method']} | {tree} | {r['batch']} | {r['leaves']} | "
            f"{r.get('branching', '') if tree in ('balanced', 'ragged') else ''} | "
            f"{r.get('dtype')} | {r['median_s'] * 1e3:.1f} | {speed} | "
            f"{r['peak_bytes'] / 2**20:.0f} | {mem} | "
            f"{r['flops'] / r['median_s'] / 1e9:.1f} | "
            f"{_faults(r)} |")
    return '\n'.join(lines)


def _faults(r):
    faults = r.get('minor_faults_per_step')
    return 'n/a' if faults is None else f'{faults:,.0f}'


def plot(results, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    series = defaultdict(list)
    for r in results:
        if 'median_s' not in r or r['batch'] != 1:
            continue
        label = r['method'] + (' (ragged)' if r.get('ragged') else '')
        if r.get('branching') not in (None, 16) and r['method'].startswith(
                'hsa'):
            continue
        series[label].append((r['leaves'], r['median_s'] * 1e3,
                              r['peak_bytes'] / 2**20))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        axes[0].loglog(xs, [p[1] for p in points], 'o-', label=label)
        axes[1].loglog(xs, [max(p[2], 1e-1) for p in points], 'o-',
                       label=label)
    axes[0].set(xlabel='leaves', ylabel='forward+backward, median ms',
                title=title)
    axes[1].set(xlabel='leaves', ylabel='peak memory increase, MiB')
    for ax in axes:
        ax.grid(True, which='both', alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print('wrote', path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('json', nargs='+')
    parser.add_argument('--png', default=None)
    parser.add_argument('--title', default='HSA vs flat attention')
    args = parser.parse_args()
    results = []
    for path in args.json:
        with open(path) as f:
            data = json.load(f)
        print(f"<!-- {path}: {json.dumps(data.get('info', {}))} -->")
        results += data['results']
    print(table(results))
    if args.png:
        plot(results, args.png, args.title)


if __name__ == '__main__':
    main()
