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
        dim (int): number of coordinates :math:`P` read from ``pos[:, :P]``.
        out_channels (int): size of the embedding.
        num_frequencies (int): :math:`K`. (default: :obj:`16`)
        min_period (float): shortest period. (default: :obj:`2.0`)
        max_period (float): longest period. (default: :obj:`4096.0`)

    Shapes:
        - **input:** pos ``[N, P']`` with :math:`P' \ge P`
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, dim: int, out_channels: int,
                 num_frequencies: int = 16, min_period: float = 2.0,
                 max_period: float = 4096.0):
        super().__init__()
        if dim < 1:
            raise ValueError(f'dim must be >= 1, got {dim}')
        if not 0 < min_period <= max_period:
            raise ValueError(f'Need 0 < min_period <= max_period, got '
                             f'{min_period} and {max_period}')
        self.dim = dim
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
        angle = pos[:, :self.dim, None] * self.angular_frequency  # (N, P, K)
        features = torch.cat([angle.sin(), angle.cos()], dim=-1)
        return self.lin(features.flatten(1))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(dim={self.dim}, '
                f'{self.out_channels})')


class KeyPositionEncoder(nn.Module):
    r"""A learned embedding per key, for keyed families (a title, an image
    and a body under one root): the position ``pos[:, 0]`` holds the integer
    key id.

    Args:
        num_keys (int): number of distinct keys.
        out_channels (int): size of the embedding.

    Shapes:
        - **input:** pos ``[N, P]`` (``pos[:, 0]`` in ``[0, num_keys)``)
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, num_keys: int, out_channels: int):
        super().__init__()
        if num_keys < 1:
            raise ValueError(f'num_keys must be >= 1, got {num_keys}')
        self.num_keys = num_keys
        self.emb = nn.Embedding(num_keys, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.emb.reset_parameters()

    def forward(self, pos: Tensor) -> Tensor:
        # Rows of other family types may hold any value: clamp, the caller
        # masks them out.
        key = pos[:, 0].round().long().clamp(0, self.num_keys - 1)
        return self.emb(key)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_keys}, '
                f'{self.emb.embedding_dim})')


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
        return FourierPositionEncoder(spec, out_channels, num_frequencies,
                                      max_period=max_period)
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and \
            spec[0] == 'key' and isinstance(spec[1], int):
        return KeyPositionEncoder(spec[1], out_channels)
    raise ValueError(f"Unknown family position spec {spec!r}; use an int P "
                     f"(Fourier features of P-D positions), ('key', K) (K "
                     f"learned keys) or None (unordered set)")


class FamilyPositionEncoder(nn.Module):
    r"""Embeds every node's position with the encoder of its family type.

    A node's family type (``family_type[i]``) names the kind of family it
    belongs to; all its siblings share it. Type ``-1`` (roots, or positions
    to ignore) gets a zero embedding, as do nodes when :obj:`pos` is
    :obj:`None`.

    Args:
        out_channels (int): size of the shared embedding.
        families (list): one spec per family type: an ``int`` :math:`P` for
            Fourier features of :math:`P`-D positions
            (:class:`FourierPositionEncoder`), ``('key', K)`` for a keyed
            family (:class:`KeyPositionEncoder`), or :obj:`None` for an
            unordered set. (default: ``[1]``, one 1-D sequence type)
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
        self.max_dim = max([s for s in families if isinstance(s, int)
                            and not isinstance(s, bool)] + [1])

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
        if pos.size(1) < self.max_dim:
            raise ValueError(f'pos has {pos.size(1)} coordinates but a family '
                             f'type needs {self.max_dim}')
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
