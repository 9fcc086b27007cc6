r"""hsa_graph: Hierarchical Self-Attention (Amizadeh et al., NeurIPS 2025) for
PyTorch Geometric."""
from .hierarchy import Hierarchy
from .layout import TreeLayout, tree_layout

__version__ = '0.1.0'

__all__ = ['Hierarchy', 'TreeLayout', 'tree_layout', '__version__']
