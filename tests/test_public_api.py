import importlib
import inspect

import pytest

MODULES = ['hsa_graph', 'hsa_graph.nn', 'hsa_graph.convert',
           'hsa_graph.datasets', 'hsa_graph.zero_shot', 'hsa_graph.testing',
           'hsa_graph.layout', 'hsa_graph.functional', 'hsa_graph.loader']


@pytest.mark.parametrize('name', MODULES)
def test_every_public_name_is_documented(name):
    module = importlib.import_module(name)
    assert module.__all__, f'{name} exports nothing'
    for attr in module.__all__:
        obj = getattr(module, attr)       # exported names exist
        if inspect.isclass(obj) or inspect.isfunction(obj):
            doc = inspect.getdoc(obj)
            assert doc and len(doc) > 20, f'{name}.{attr} has no docstring'


def test_core_functions_have_shapes_and_math():
    import hsa_graph
    from hsa_graph.nn import HSAConv
    for obj in (hsa_graph.hsa_attention, hsa_graph.hsa_attention_matrix,
                hsa_graph.tree_upward, hsa_graph.tree_downward, HSAConv):
        doc = inspect.getdoc(obj)
        assert 'Shapes:' in doc and '.. math::' in doc, obj
