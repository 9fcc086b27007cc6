r"""Base of the datasets processed from files found on this machine."""
from __future__ import annotations

import os.path as osp
from typing import Tuple

from torch_geometric.data import InMemoryDataset


class LocalSourceDataset(InMemoryDataset):
    r"""An :class:`~torch_geometric.data.InMemoryDataset` whose raw files are
    copied from a local source (an installed package, a fetched archive), with
    the class names in :attr:`classes`."""

    classes: Tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        # The named classes, not PyG's count of the labels found in ``y``.
        return len(self.classes)

    def _download(self) -> None:
        # Processed files suffice (e.g. copied to a machine without the raw
        # data); only fetch raw data when something must be processed.
        if all(osp.exists(path) for path in self.processed_paths):
            return
        super()._download()
