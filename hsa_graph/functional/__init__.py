r"""Functional HSA operators and tree passes."""
from .attention import hsa_attention, hsa_log_partition
from .dense import hsa_attention_matrix
from .passes import tree_downward, tree_upward

__all__ = ['hsa_attention', 'hsa_attention_matrix', 'hsa_log_partition',
           'tree_upward', 'tree_downward']
