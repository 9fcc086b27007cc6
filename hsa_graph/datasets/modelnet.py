r"""ModelNet10/40 as seeded surface point clouds, over PyG's loader."""
from __future__ import annotations

import os.path as osp
from typing import Callable, Optional

from torch_geometric.datasets import ModelNet
from torch_geometric.transforms import Compose

from ..sampling import SampleSurface

__all__ = ['ModelNetPoints']


class ModelNetPoints(ModelNet):
    r"""PyG's :class:`~torch_geometric.datasets.ModelNet` (CAD meshes of 10 or
    40 categories, Wu et al., CVPR 2015) turned into seeded surface point
    clouds once, at processing time, as the furniture data is
    (:class:`~hsa_graph.datasets.SweetHome3DFurniture`).

    The download needs internet access to princeton.edu (PyG's own code).
    Offline, put the unpacked ``ModelNet10``/``ModelNet40`` folders (one
    sub-folder per category, each with ``train/`` and ``test/`` OFF files)
    in :obj:`root`/raw and nothing is downloaded. ModelNet is **z-up**, like
    the furniture data, so the same up-axis augmentation applies.

    Each example is a :class:`~torch_geometric.data.Data` with ``pos``
    ``[num_points, 3]`` in the unit ball and ``y`` ``[1]``; pass
    ``transform=hsa_graph.transforms.PointCloudToHierarchy(leaf_size=16)``
    to get octree hierarchies.

    Args:
        root (str): root directory of the dataset.
        name (str): ``'10'`` or ``'40'``. (default: :obj:`'10'`)
        train (bool): training or test split. (default: :obj:`True`)
        num_points (int): points sampled per mesh. (default: :obj:`2048`)
        seed (int): base seed of the sampling; each mesh's seed also depends
            on its vertices, so file order does not matter.
            (default: :obj:`0`)
        transform (callable, optional): applied on every access.
        pre_transform (callable, optional): applied once, after sampling.
        pre_filter (callable, optional): keeps the meshes it accepts (it sees
            the mesh, before sampling).
        force_reload (bool): reprocess. (default: :obj:`False`)
    """

    def __init__(self, root: str, name: str = '10', train: bool = True,
                 num_points: int = 2048, seed: int = 0,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False) -> None:
        if name not in ('10', '40'):
            raise ValueError(f"name must be '10' or '40', got {name!r}")
        self.num_points = num_points
        self.seed = seed
        sample = SampleSurface(num_points, seed=seed)
        full_pre_transform = (sample if pre_transform is None else
                              Compose([sample, pre_transform]))
        super().__init__(root, name=name, train=train, transform=transform,
                         pre_transform=full_pre_transform,
                         pre_filter=pre_filter, force_reload=force_reload)

    @property
    def processed_dir(self) -> str:
        return osp.join(self.root,
                        f'processed_p{self.num_points}_s{self.seed}')

    @property
    def raw_file_names(self):
        names = super().raw_file_names  # ModelNet10's categories
        if self.name == '40':
            names = _MODELNET40_CATEGORIES
        return names

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}{self.name}({len(self)}, '
                f'num_points={self.num_points})')


# PyG checks only ModelNet10's folder names, so an incomplete ModelNet40
# folder would be processed silently; checking all 40 makes it download.
_MODELNET40_CATEGORIES = [
    'airplane', 'bathtub', 'bed', 'bench', 'bookshelf', 'bottle', 'bowl',
    'car', 'chair', 'cone', 'cup', 'curtain', 'desk', 'door', 'dresser',
    'flower_pot', 'glass_box', 'guitar', 'keyboard', 'lamp', 'laptop',
    'mantel', 'monitor', 'night_stand', 'person', 'piano', 'plant', 'radio',
    'range_hood', 'sink', 'sofa', 'stairs', 'stool', 'table', 'tent',
    'toilet', 'tv_stand', 'vase', 'wardrobe', 'xbox']
