r"""The document-classification example: reproducible from a seed, and runs
under torchrun with 2 processes (DistributedDataParallel, gloo on CPU)."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
EXAMPLE = osp.join(REPO, 'examples', 'document_classification.py')
SAMPLE = osp.join(REPO, 'datasets', 'samples', 'text', 'imdb')


def example_args(root, out, *extra):
    return ['--dataset', 'imdb', '--root', root, '--out', out, '--epochs',
            '1', '--seeds', '0', '--channels', '16', '--heads', '2',
            '--batch-size', '8', '--no-progress',
            '--threads', str(torch.get_num_threads()), *extra]


@pytest.fixture
def root(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / 'imdb')
    return str(tmp_path)


def load_example():
    import importlib.util
    spec = importlib.util.spec_from_file_location('document_classification',
                                                  EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_is_reproducible_from_a_seed(root, tmp_path, capsys):
    example = load_example()
    threads = torch.get_num_threads()
    try:
        first = example.main(example_args(root, str(tmp_path / 'a')))
        second = example.main(example_args(root, str(tmp_path / 'b')))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(first['runs'], second['runs']):
        assert [h['train_loss'] for h in a['history']] == \
            [h['train_loss'] for h in b['history']]
        assert a['test_acc'] == b['test_acc']
    # Same code, same parameters for both models.
    assert first['runs'][0]['parameters'] == first['runs'][1]['parameters']
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith('hsa acc=0.') and ' flat acc=' in out[-1]
    for name in ('results.json', 'learning_curves.png',
                 'checkpoints/hsa_seed0.pt', 'checkpoints/flat_seed0.pt'):
        assert osp.exists(tmp_path / 'a' / name), name


@pytest.mark.slow
def test_example_under_torchrun_two_processes(root, tmp_path):
    out = str(tmp_path / 'ddp')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               '--nproc_per_node', '2', EXAMPLE,
               *example_args(root, out, '--models', 'hsa')]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith('hsa acc=0.'), result.stdout[-2000:]
    with open(osp.join(out, 'results.json')) as f:
        results = json.load(f)
    assert results['world_size'] == 2
    # Each process trained on half the data, but the logged epoch covers
    # all of it (counts are all-reduced).
    assert results['num_train'] == 52
    assert 0.0 <= results['summary']['hsa']['test_acc']['mean'] <= 1.0
