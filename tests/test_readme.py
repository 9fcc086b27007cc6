import os
import re


def test_readme_first_example_runs():
    path = os.path.join(os.path.dirname(__file__), '..', 'README.md')
    with open(path) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    namespace = {}
    exec(compile(blocks[0], 'README.md', 'exec'), namespace)
    assert tuple(namespace['out'].shape) == (10, 128)
    assert tuple(namespace['y'].shape) == (10, 4, 8)
