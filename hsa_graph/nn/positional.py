r"""Position encoders for sibling positions, one per family type.

HSA adds :math:`\epsilon_A^\top \epsilon_C` to the logit of two siblings
(spec section 5). Each family type (tokens in a sentence, sentences in a
paragraph, patches in an image cell, modalities under a root...) has its own
raw position domain, so each gets its own encoder: Fourier features plus a
learned linear map for 1-D, 2-D and 3-D coordinates, or a learned embedding
for keyed families. The encoders are shared by all layers; every layer
projects the shared embedding to its own heads.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ['FourierPositionEncoder', 'KeyPositionEncoder',
           'FamilyPositionEncoder']

FamilySpec = Union[int, str, Tuple[str, int], None]


class FourierPositionEncoder(nn.Module):
    r"""Fourier features of :math:`P`-dimensional positions followed by a
    learned linear map:

    .. math::
        \epsilon(p) = W \big[\sin(2\pi p_c / T_k), \cos(2\pi p_c / T_k)
        \big]_{c \le P,\, k \le K} + b,

    with :math:`K` periods :math:`T_k` spaced geometrically between
    :obj:`min_period` and :obj:`max_period`. Sibling indices ``0, 1, 2...``
    are told apart by the short periods and compared over long ranges by the
    long ones, so a flat sequence of 1,000 tokens and a sentence of 30 use the
    same encoder.

    Args:
        dim (int): number of coordinates :math:`P`, read from
            ``pos[:, offset:offset + P]``.
        out_channels (int): size of the embedding.
        num_frequencies (int): :math:`K`. (default: :obj:`16`)
        min_period (float): shortest period. (default: :obj:`2.0`)
        max_period (float): longest period. (default: :obj:`4096.0`)
        offset (int): first column of ``pos`` read. (default: :obj:`0`)

    Shapes:
        - **input:** pos ``[N, P']`` with :math:`P' \ge` offset + P
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, dim: int, out_channels: int,
                 num_frequencies: int = 16, min_period: float = 2.0,
                 max_period: float = 4096.0, offset: int = 0):
        super().__init__()
        if dim < 1:
            raise ValueError(f'dim must be >= 1, got {dim}')
        if not 0 < min_period <= max_period:
            raise ValueError(f'Need 0 < min_period <= max_period, got '
                             f'{min_period} and {max_period}')
        self.dim = dim
        self.offset = offset
        self.out_channels = out_channels
        periods = torch.logspace(math.log10(min_period), math.log10(max_period),
                                 num_frequencies)
        self.register_buffer('angular_frequency', 2 * math.pi / periods,
                             persistent=False)
        self.lin = nn.Linear(2 * dim * num_frequencies, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, pos: Tensor) -> Tensor:
        coords = pos[:, self.offset:self.offset + self.dim]
        angle = coords.unsqueeze(-1) * self.angular_frequency     # (N, P, K)
        features = torch.cat([angle.sin(), angle.cos()], dim=-1)
        return self.lin(features.flatten(1))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(dim={self.dim}, '
                f'{self.out_channels})')


class KeyPositionEncoder(nn.Module):
    r"""A learned embedding per key, for keyed families (a title, an image
    and a body under one root). The key is stored one-hot in
    ``pos[:, offset:offset + K]``, as
    :func:`~hsa_graph.convert.compose_hierarchies` writes it, and embedded by
    a bias-free linear map: row :math:`k` of its weight is key :math:`k`'s
    embedding.

    Args:
        num_keys (int): number of distinct keys :math:`K`.
        out_channels (int): size of the embedding.
        offset (int): first column of the one-hot key. (default: :obj:`0`)

    Shapes:
        - **input:** pos ``[N, P]`` with :math:`P \ge` offset + K
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, num_keys: int, out_channels: int, offset: int = 0):
        super().__init__()
        if num_keys < 1:
            raise ValueError(f'num_keys must be >= 1, got {num_keys}')
        self.num_keys = num_keys
        self.offset = offset
        self.out_channels = out_channels
        self.lin = nn.Linear(num_keys, out_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.lin.weight)

    def forward(self, pos: Tensor) -> Tensor:
        return self.lin(pos[:, self.offset:self.offset + self.num_keys])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_keys}, '
                f'{self.out_channels})')


class _NoPosition(nn.Module):
    # Unordered families (sets): epsilon = 0.
    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, pos: Tensor) -> Tensor:
        return pos.new_zeros(pos.size(0), self.out_channels)

    def __repr__(self) -> str:
        return 'Unordered()'


def _make_encoder(spec: FamilySpec, out_channels: int,
                  num_frequencies: int, max_period: float) -> nn.Module:
    if spec is None or spec == 'none':
        return _NoPosition(out_channels)
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = ('fourier', spec)
    if isinstance(spec, (tuple, list)) and len(spec) in (2, 3) and \
            spec[0] in ('fourier', 'key') and \
            all(isinstance(v, int) for v in spec[1:]):
        offset = spec[2] if len(spec) == 3 else 0
        if spec[0] == 'fourier':
            return FourierPositionEncoder(spec[1], out_channels,
                                          num_frequencies,
                                          max_period=max_period,
                                          offset=offset)
        return KeyPositionEncoder(spec[1], out_channels, offset=offset)
    raise ValueError(f"Unknown family position spec {spec!r}; use an int P "
                     f"or ('fourier', P[, offset]) (Fourier features of P-D "
                     f"positions), ('key', K[, offset]) (K learned keys, "
                     f"one-hot in pos) or None (unordered set)")


def _columns_needed(spec: FamilySpec) -> int:
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec
    if isinstance(spec, (tuple, list)):
        return spec[1] + (spec[2] if len(spec) == 3 else 0)
    return 0


class FamilyPositionEncoder(nn.Module):
    r"""Embeds every node's position with the encoder of its family type.

    A node's family type (``family_type[i]``) names the kind of family it
    belongs to; all its siblings share it. Type ``-1`` (roots, or positions
    to ignore) gets a zero embedding, as do nodes when :obj:`pos` is
    :obj:`None`.

    Args:
        out_channels (int): size of the shared embedding.
        families (list): one spec per family type: an ``int`` :math:`P` (or
            ``('fourier', P, offset)``) for Fourier features of
            :math:`P`-D positions in ``pos[:, offset:offset + P]``
            (:class:`FourierPositionEncoder`), ``('key', K)`` (or
            ``('key', K, offset)``) for a keyed family with one-hot keys
            (:class:`KeyPositionEncoder`), or :obj:`None` for an unordered
            set. (default: ``[1]``, one 1-D sequence type)
        num_frequencies (int): Fourier frequencies per coordinate.
            (default: :obj:`16`)
        max_period (float): longest Fourier period; make it exceed the
            longest family. (default: :obj:`4096.0`)

    Shapes:
        - **input:** pos ``[N, P]``, family_type ``[N]`` (optional when
          there is one family type)
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, out_channels: int,
                 families: Sequence[FamilySpec] = (1, ),
                 num_frequencies: int = 16, max_period: float = 4096.0):
        super().__init__()
        if len(families) == 0:
            raise ValueError('families must list at least one family type')
        self.out_channels = out_channels
        self.families: List[FamilySpec] = list(families)
        self.encoders = nn.ModuleList([
            _make_encoder(spec, out_channels, num_frequencies, max_period)
            for spec in families
        ])
        self.max_dim = max([_columns_needed(s) for s in families] + [1])

    def reset_parameters(self) -> None:
        for encoder in self.encoders:
            if hasattr(encoder, 'reset_parameters'):
                encoder.reset_parameters()

    def forward(self, pos: Tensor, family_type: Optional[Tensor] = None
                ) -> Tensor:
        if pos.dim() == 1:
            pos = pos.unsqueeze(-1)
        if pos.dim() != 2:
            raise ValueError(f'pos must be [N, P], got {list(pos.shape)}')
        if pos.size(1) != self.max_dim:
            # More columns than the families read would be silently dropped.
            raise ValueError(f'pos has {pos.size(1)} coordinates but the '
                             f'family types {self.families} read '
                             f'{self.max_dim}')
        if family_type is None:
            if len(self.encoders) != 1:
                raise ValueError(f'family_type is required with '
                                 f'{len(self.encoders)} family types')
            return self.encoders[0](pos)
        if family_type.shape != pos.shape[:1]:
            raise ValueError(f'family_type must be [N] = [{pos.size(0)}], '
                             f'got {list(family_type.shape)}')
        if not torch.compiler.is_compiling() and family_type.numel() > 0 and \
                int(family_type.max()) >= len(self.encoders):
            raise ValueError(f'family_type holds {int(family_type.max())} but '
                             f'only {len(self.encoders)} family types exist '
                             f'(0..{len(self.encoders) - 1}, -1 for none)')
        # Every encoder runs on every row and a mask picks the rows' own
        # type: no data-dependent indexing (torch.compile friendly), and
        # every parameter stays in the graph (DDP needs no unused-parameter
        # search). The number of family types is small.
        out = pos.new_zeros(pos.size(0), self.out_channels)
        for type_id, encoder in enumerate(self.encoders):
            mine = (family_type == type_id).unsqueeze(-1)
            out = out + torch.where(mine, encoder(pos), 0.0)
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.out_channels}, '
                f'families={self.families})')
