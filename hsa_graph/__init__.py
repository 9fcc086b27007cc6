r"""hsa_graph: Hierarchical Self-Attention (Amizadeh et al., NeurIPS 2025) for
PyTorch Geometric."""
from .hierarchy import Hierarchy
from .layout import TreeLayout, tree_layout
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all
from .convert import *  # noqa: F401,F403
from .convert import __all__ as _convert_all
from . import (convert, datasets, functional, loader, nn, plot,  # noqa: F401
               sampling, transforms, zero_shot)

__version__ = '0.1.0'

__all__ = (['Hierarchy', 'TreeLayout', 'tree_layout', '__version__'] +
           list(_functional_all) + list(_convert_all))
