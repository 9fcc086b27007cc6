r"""Images to hierarchies: a quad-tree over square patches."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hierarchy import Hierarchy
from ._common import assemble, positive_int, relative_positions
from .point_cloud import octree_parent

__all__ = ['from_image']


def from_image(img: Tensor, patch_size: int = 4, pad: bool = False,
               channels_last: Optional[bool] = None) -> Hierarchy:
    r"""Converts an image into a quad-tree :class:`~hsa_graph.Hierarchy` of
    patches.

    The image is cut into ``patch_size x patch_size`` patches on a ``gh x gw``
    grid. The leaves are the patches in row-major order (leaf ``i`` is patch
    ``(i // gw, i % gw)``, ``source_id[i] = i``) and carry the flattened
    pixels ``[C * patch_size**2]`` (channel-major, like
    :meth:`torch.Tensor.unfold`) as ``x``. Internal nodes are quad-tree cells
    over the patch grid: every cell has up to 4 children. Grids that are not
    square powers of two are handled by dropping empty cells and collapsing
    cells with a single child.

    ``pos`` is 2-D: the (row, column) position of the node's centre inside
    its parent's cell, scaled to ``[-1, 1]`` (a 2 x 2 cell's patches sit at
    ``(+-1, +-1)``); ``centroid`` holds the absolute (row, column) centres in
    patch units.

    Args:
        img (Tensor): ``[C, H, W]`` or ``[H, W]`` image (integer images are
            converted to floats without rescaling).
        patch_size (int): side of a square patch in pixels.
            (default: :obj:`4`)
        pad (bool): zero-pad the bottom and right edges up to a multiple of
            :obj:`patch_size`; otherwise a size that is not a multiple raises.
            (default: :obj:`False`)
        channels_last (bool, optional): :obj:`True` reads a ``[H, W, C]``
            image (as from PIL, NumPy or matplotlib), :obj:`False` a
            ``[C, H, W]`` one. :obj:`None` expects ``[C, H, W]`` and raises
            on an image that looks channels-last: a last dimension of 1, 3
            or 4 with a first dimension above 4 (a ``[32, 32, 3]`` image
            would otherwise be read as 32 channels of 32 x 3 pixels).
            (default: :obj:`None`)

    Raises:
        ValueError: for an empty image, a wrong shape, an image that looks
            channels-last (with ``channels_last=None``), NaN/inf pixels, or a
            size that :obj:`patch_size` does not divide (with ``pad=False``).
        TypeError: for a complex or non-numeric image.

    Shapes:
        - **input:** ``[C, H, W]``
        - **output:** a hierarchy with ``gh * gw`` leaves, ``x [N, C * p * p]``,
          ``pos [N, 2]``.

    Example::

        >>> h = from_image(torch.rand(1, 32, 32), patch_size=4)
        >>> h.num_leaves, h.height
        (64, 3)
    """
    try:
        img = torch.as_tensor(img).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f'img must be a tensor or array of numbers, got '
                        f'{type(img).__name__} ({error})') from None
    if img.is_complex():
        raise TypeError(f'img must be real, got {img.dtype}')
    if channels_last not in (None, True, False):
        raise ValueError(f'channels_last must be None, True or False, got '
                         f'{channels_last!r}')
    if img.dim() == 2:
        img = img[None]
    elif img.dim() == 3 and channels_last:
        img = img.permute(2, 0, 1)
    elif img.dim() == 3 and channels_last is None and \
            img.size(-1) in (1, 3, 4) and img.size(0) > 4:
        raise ValueError(
            f'img of shape {list(img.shape)} looks channels-last [H, W, C] '
            f'({img.size(-1)} channels); from_image expects [C, H, W]: pass '
            f'img.permute(2, 0, 1) or channels_last=True (or '
            f'channels_last=False if it really has {img.size(0)} channels)')
    if img.dim() != 3:
        raise ValueError(f'img must have shape [C, H, W] or [H, W], got '
                         f'{list(img.shape)}')
    channels, height, width = img.shape
    if img.numel() == 0:
        raise ValueError(f'img is empty (shape {list(img.shape)})')
    patch_size = positive_int(patch_size, 'patch_size')
    if patch_size > max(height, width):
        raise ValueError(f'patch_size={patch_size} is larger than the image '
                         f'({height} x {width}); a patch must fit in it')
    if not img.is_floating_point():
        img = img.to(torch.get_default_dtype())
    if not bool(torch.isfinite(img).all()):
        raise ValueError('img contains NaN or inf')
    if height % patch_size or width % patch_size:
        if not pad:
            raise ValueError(f'patch_size={patch_size} does not divide the '
                             f'image size {height} x {width}; pass pad=True '
                             f'to zero-pad the bottom and right edges')
        img = F.pad(img, (0, -width % patch_size, 0, -height % patch_size))
        height, width = img.shape[1:]
    rows, cols = height // patch_size, width // patch_size
    patches = img.unfold(1, patch_size, patch_size).unfold(
        2, patch_size, patch_size)                      # [C, gh, gw, p, p]
    x = patches.permute(1, 2, 0, 3, 4).reshape(rows * cols, -1)
    row, col = torch.meshgrid(torch.arange(rows), torch.arange(cols),
                              indexing='ij')
    grid = torch.stack([row.flatten(), col.flatten()], dim=1)
    bits = max(1, math.ceil(math.log2(max(rows, cols))))
    parent = octree_parent(grid, bits, leaf_size=1)
    h = assemble(parent, rows * cols, x=x)
    h.pos, h.centroid = relative_positions(h, grid.to(x.dtype) + 0.5,
                                           rows * cols)
    return h
