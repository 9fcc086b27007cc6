r"""Merges the results of 3-D example runs made in separate processes (e.g. one
seed each, with ``--first-seed``) into one summary with mean +- 95% CI.

    python examples/merge_3d_results.py runs/multimodal runs/mm_seed0 runs/mm_seed1 runs/mm_seed2

Reads ``results.json`` (or ``runs_partial.json``) from every input folder and
writes ``results.json`` and ``curves.png`` to the first argument.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shape_utils import fmt, mean_ci, plot_curves, summarize, write_json  # noqa


def load_runs(folder: str):
    for name in ('results.json', 'runs_partial.json'):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path) as handle:
                payload = json.load(handle)
            return payload['runs'], payload.get('args', {})
    raise FileNotFoundError(f'no results.json or runs_partial.json in '
                            f'{folder}')


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, inputs = argv[0], argv[1:]
    runs, args = [], {}
    for folder in inputs:
        found, args = load_runs(folder)
        runs.extend(found)
    metrics = [m for m in ('test_acc', 'test_f1', 'test_miou', 'epoch_s',
                           'peak_mb') if m in runs[0]]
    extra = sorted({key for run in runs for key in run
                    if key.startswith(('acc_without_', 'f1_without_'))})
    summary = summarize(runs, metrics)
    for name, row in summary.items():
        mine = [run for run in runs if run['model'] == name]
        for key in extra:
            if all(key in run for run in mine):
                row[key] = mean_ci([run[key] for run in mine])
    for name, row in summary.items():
        cells = ' '.join(f'{m} {fmt(row[m])}' for m in metrics
                         if m.startswith('test_'))
        print(f"{name:16s} n={row[metrics[0]]['n']} {cells} "
              f"{row['epoch_s']['mean']:.2f} s/epoch "
              f"peak {row['peak_mb']['mean']:.0f} MB")
        for key in extra:
            if key in row and key.startswith('acc_'):
                print(f'{"":16s} {key}: {fmt(row[key])}')
    write_json(os.path.join(out, 'results.json'),
               {'args': args, 'inputs': inputs, 'summary': summary,
                'runs': runs})
    key = 'test_miou' if 'test_miou' in runs[0] else 'test_acc'
    plot_curves(runs, os.path.join(out, 'curves.png'), key=key,
                ylabel=key.replace('_', ' '))
    return summary


if __name__ == '__main__':
    main()
