r"""Multi-modal composition: several hierarchies under one keyed root."""
from __future__ import annotations

import warnings
from typing import Dict, Mapping

import torch
from torch import Tensor

from ..hierarchy import Hierarchy

__all__ = ['compose_hierarchies']

# Attributes handled explicitly below; anything else is merged when every
# part that has it agrees on trailing shape and dtype.
_HANDLED = {'edge_index', 'x', 'pos', 'node_type', 'node_type_names',
            'source_id', 'num_nodes'}


def _part_types(key: str, part: Hierarchy):
    r"""Per-node type ids of a part and their names (nested parts keep their
    own types, prefixed with the key)."""
    node_type = getattr(part, 'node_type', None)
    if node_type is None:
        return torch.zeros(part.num_nodes, dtype=torch.long), [key]
    node_type = node_type.long()
    names = getattr(part, 'node_type_names', None)
    count = int(node_type.max()) + 1
    if names is None:
        names = [str(t) for t in range(count)]
    if count > len(names):
        raise ValueError(f"part '{key}': node_type holds {count} types but "
                         f'node_type_names lists {len(names)}')
    # The part's own root(s) may carry -1 ("no type"): keep it as -1.
    return node_type, [f'{key}/{name}' for name in names]


def _merge_x(parts: Dict[str, Hierarchy]):
    xs = {key: getattr(part, 'x', None) for key, part in parts.items()}
    present = {key: x for key, x in xs.items() if x is not None}
    if not present:
        return None
    shapes = {tuple(x.shape[1:]) for x in present.values()}
    dtypes = {x.dtype for x in present.values()}
    if len(dtypes) > 1 or (len(shapes) > 1 and not all(
            x.is_floating_point() and x.dim() == 2 for x in present.values())):
        detail = ', '.join(f"'{k}': {x.dtype} {list(x.shape[1:])}"
                           for k, x in present.items())
        raise ValueError(f'cannot stack the parts\' features x ({detail}); '
                         f'embed them to float matrices first (they may have '
                         f'different widths, which are zero-padded), or drop '
                         f'x from the parts and embed after composing using '
                         f'node_type')
    reference = next(iter(present.values()))
    width = max(x.size(1) for x in present.values()) if reference.dim() == 2 \
        else None
    rows = []
    for key, part in parts.items():
        x = xs[key]
        if x is None:
            shape = (part.num_nodes, ) + tuple(reference.shape[1:])
            if width is not None:
                shape = (part.num_nodes, width)
            x = reference.new_zeros(shape)
        elif width is not None and x.size(1) < width:
            x = torch.cat([x, x.new_zeros(x.size(0), width - x.size(1))], 1)
        rows.append(x)
    return torch.cat(rows + [rows[0].new_zeros((1, ) + rows[0].shape[1:])])


def _merge_other(parts: Dict[str, Hierarchy]) -> Dict[str, Tensor]:
    names = set()
    for part in parts.values():
        names.update(part.keys())
    merged, dropped = {}, []
    for name in sorted(names - _HANDLED):
        values = {key: part[name] for key, part in parts.items()
                  if name in part}
        tensors = all(isinstance(v, Tensor) and v.dim() >= 1 and
                      v.size(0) == parts[k].num_nodes
                      for k, v in values.items())
        signatures = {(v.dtype, tuple(v.shape[1:])) for v in values.values()} \
            if tensors else set()
        if tensors and len({dtype for dtype, _ in signatures}) == 1 and all(
                v.is_floating_point() and v.dim() == 2 for v in values.values()):
            # float matrices of different widths: zero-pad like x
            width = max(v.size(1) for v in values.values())
            values = {k: torch.cat([v, v.new_zeros(v.size(0), width - v.size(1))],
                                   1) for k, v in values.items()}
            signatures = {(v.dtype, tuple(v.shape[1:])) for v in values.values()}
        if not tensors or len(signatures) != 1:
            dropped.append(name)
            continue
        reference = next(iter(values.values()))
        fill = 0 if reference.is_floating_point() else -1
        rows = [values.get(key, reference.new_full(
            (part.num_nodes, ) + tuple(reference.shape[1:]), fill))
            for key, part in parts.items()]
        rows.append(reference.new_full((1, ) + tuple(reference.shape[1:]),
                                       fill))
        merged[name] = torch.cat(rows)
    if dropped:
        warnings.warn(f'compose_hierarchies dropped attributes that are not '
                      f'one row per node with one shape and dtype across '
                      f'parts: {dropped}', stacklevel=3)
    return merged


def compose_hierarchies(parts: Mapping[str, Hierarchy]) -> Hierarchy:
    r"""Puts several hierarchies under one new root as a keyed family (the
    paper's key-value signal for multi-modal data).

    The parts' nodes are stacked in the mapping's order, then the new root is
    appended (last node). Each part's root becomes a child of the new root,
    and its position in that family is the key: a one-hot vector over the
    keys.

    * ``pos`` (``[N, K + P]``): the first ``K`` columns hold the one-hot key
      on the parts' roots (zeros elsewhere); the last ``P`` columns hold each
      part's own positions, zero-padded to the widest part. A family only
      ever compares its own members, so parts with different position
      widths (1-D token indices, 2-D patches) coexist.
    * ``node_type`` (``[N]``): the part's index in the mapping for every node
      of that part, so layers can use per-modality projections; a part that
      already has ``node_type`` keeps its types, renamed
      ``'<key>/<type>'``. ``node_type_names`` lists the names. The new root
      has type ``-1``.
    * ``source_id``: each part's own ``source_id`` (ids into that part's
      input; a part without one maps its leaves to its local node ids);
      ``-1`` on the new root.
    * ``x``: stacked when the parts agree; float matrices of different widths
      are zero-padded to the widest, and a part without ``x`` gets zero rows.
    * other per-node tensors (e.g. ``token_id``, ``centroid``) are stacked
      when every part that has one agrees on trailing shape and dtype (float
      matrices of different widths are zero-padded), filling absent parts
      with ``0`` (floats) or ``-1`` (integers); others (graph-level values,
      lists) are dropped with a warning that names them.

    Args:
        parts (Mapping[str, Hierarchy]): the named hierarchies (each a single
            tree), e.g. ``{'title': h_text, 'image': h_img}``.

    Returns:
        A validated :class:`~hsa_graph.Hierarchy`.

    Raises:
        ValueError: for no parts, a part that is not a single-tree
            hierarchy, or features that cannot be stacked.

    Shapes:
        - **input:** ``K`` hierarchies with ``N_k`` nodes
        - **output:** ``sum(N_k) + 1`` nodes.

    Example::

        >>> import torch
        >>> from hsa_graph import Hierarchy, from_document, from_image
        >>> h = Hierarchy.compose({'title': from_document('A cat.'),
        ...                        'image': from_image(torch.rand(3, 8, 8))})
        >>> h.node_type_names
        ['title', 'image']
    """
    if not isinstance(parts, Mapping) or len(parts) == 0:
        raise ValueError('compose_hierarchies needs a non-empty mapping '
                         '{key: Hierarchy}')
    parts = dict(parts)
    for key, part in parts.items():
        if not isinstance(key, str):
            raise ValueError(f'keys must be strings, got {key!r}')
        if not isinstance(part, Hierarchy):
            raise ValueError(f"part '{key}' is a {type(part).__name__}, not a "
                             f'Hierarchy')
        part.validate()
        if part.root_index.numel() != 1:
            raise ValueError(f"part '{key}' has {part.root_index.numel()} "
                             f'roots; compose single trees')
    keys = list(parts)
    num_keys = len(keys)
    total = sum(part.num_nodes for part in parts.values())
    root = total
    edges, types, type_names, sources, roots = [], [], [], [], []
    offset = 0
    for part in parts.values():
        edges.append(part.edge_index + offset)
        roots.append(int(part.root_index[0]) + offset)
        offset += part.num_nodes
    offset = 0
    for key, part in parts.items():
        node_type, names = _part_types(key, part)
        shifted = torch.where(node_type >= 0, node_type + len(type_names),
                              node_type)
        types.append(shifted)
        type_names.extend(names)
        source = getattr(part, 'source_id', None)
        if source is None:
            source = torch.where(part.is_leaf, torch.arange(part.num_nodes),
                                 torch.full((part.num_nodes, ), -1))
        sources.append(source.long())
        offset += part.num_nodes
    roots_t = torch.tensor(roots)
    edges.append(torch.stack([roots_t, torch.full_like(roots_t, root)]))
    edge_index = torch.cat(edges, dim=1)

    inner_width = max((part.pos.size(1) for part in parts.values()
                       if getattr(part, 'pos', None) is not None), default=0)
    pos = torch.zeros(total + 1, num_keys + inner_width)
    offset = 0
    for number, part in enumerate(parts.values()):
        part_pos = getattr(part, 'pos', None)
        if part_pos is not None:
            part_pos = part_pos.view(part.num_nodes, -1)
            pos[offset:offset + part.num_nodes,
                num_keys:num_keys + part_pos.size(1)] = part_pos.to(pos.dtype)
        pos[roots[number], number] = 1.0
        offset += part.num_nodes

    node_type = torch.cat(types + [torch.tensor([-1])])
    source_id = torch.cat(sources + [torch.tensor([-1])])
    out = Hierarchy(edge_index=edge_index, num_nodes=total + 1,
                    x=_merge_x(parts), pos=pos, node_type=node_type,
                    source_id=source_id, node_type_names=type_names,
                    **_merge_other(parts))
    out.validate()
    return out
