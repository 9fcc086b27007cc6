r"""Checks shared by the converter tests: every input element is exactly one
leaf, the tree is valid, ids map back, families respect their bounds."""
from typing import Optional

import torch

from hsa_graph import Hierarchy


def family_sizes(h: Hierarchy):
    r"""``(sizes of leaf-only families, sizes of other families)``."""
    num_nodes = h.num_nodes
    child, par = h.edge_index
    count = torch.bincount(par, minlength=num_nodes)
    internal_child = ~h.is_leaf[child]
    has_internal = torch.bincount(par[internal_child], minlength=num_nodes) > 0
    families = count > 0
    return count[families & ~has_internal], count[families & has_internal]


def check_conversion(h: Hierarchy, num_inputs: int,
                     leaf_bound: Optional[int] = None,
                     internal_bound: Optional[int] = None,
                     pos_dims: Optional[int] = None) -> None:
    assert isinstance(h, Hierarchy)
    assert h.validate()
    assert h.root_index.numel() == 1
    # Leaves are exactly the inputs, numbered first; ids map back.
    assert h.leaf_index.tolist() == list(range(num_inputs))
    assert h.source_id.dtype == torch.long
    assert h.source_id[:num_inputs].tolist() == list(range(num_inputs))
    assert bool((h.source_id[num_inputs:] == -1).all())
    # No chains: an internal node with a single child only for a 1-leaf tree.
    counts = h.child_count[num_inputs:]
    assert bool((counts >= 1).all())
    if num_inputs > 1:
        assert bool((counts >= 2).all()), counts.tolist()
    leaf_families, other_families = family_sizes(h)
    if leaf_bound is not None and leaf_families.numel():
        assert int(leaf_families.max()) <= leaf_bound
    if internal_bound is not None and other_families.numel():
        assert int(other_families.max()) <= internal_bound
    if pos_dims is not None:
        assert h.pos.shape == (h.num_nodes, pos_dims)
        assert bool(torch.isfinite(h.pos).all())
        assert float(h.pos.abs().max()) <= 1 + 1e-6
