r"""The Sweet Home 3D furniture library as a labelled 3-D shape dataset."""
from __future__ import annotations

import glob
import io
import os
import os.path as osp
import shutil
import tempfile
import zipfile
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm.auto import tqdm

from ..convert.mesh_io import read_mesh
from ..sampling import normalize_unit_sphere, sample_surface, stable_seed
from ._local import LocalSourceDataset
from ._sweethome3d_catalogue import (FURNITURE_CLASSES, FurnitureItem,
                                     id_rank_key, labelled_items,
                                     mask_class_words, read_catalogue,
                                     split_of)

__all__ = ['SweetHome3DFurniture']

#: Where Debian's ``sweethome3d-furniture`` package installs the libraries.
DEFAULT_CATALOGUE_DIR = '/usr/share/sweethome3d/furniture'
ICON_SIZE = 128


class SweetHome3DFurniture(LocalSourceDataset):
    r"""The 361 furniture models of the free Sweet Home 3D libraries that fall
    into 10 ModelNet-like classes, as seeded surface point clouds, each with
    its 128 x 128 catalogue icon and its name: a small offline stand-in for
    ModelNet, and a multi-modal (shape + image + text) dataset.

    The libraries come from Debian (``apt-get install -y
    sweethome3d-furniture``, or ``datasets/fetch_furniture.sh``); they are
    copied into :obj:`root`/raw on first use. Items get a class from their
    English name (and catalogue category) by the ordered keyword rules in
    :data:`~hsa_graph.datasets._sweethome3d_catalogue.FURNITURE_CLASS_RULES`;
    items no rule matches are left out. Per class, every fifth item (ranked
    by the CRC-32 of its catalogue id) is in the test split: 293 train / 68
    test items for the 1.8 libraries.

    Every mesh is rotated by the catalogue's ``modelRotation``, stretched to
    the catalogue's width x height x depth (as Sweet Home 3D displays it),
    turned **z-up**, sampled uniformly on its surface with a seed derived
    from :obj:`seed` and the item id, and scaled into the unit ball.

    Each example is a :class:`~torch_geometric.data.Data` with

    * ``pos`` ``[num_points, 3]``: the point cloud (z up);
    * ``y`` ``[1]``: class id, an index into :attr:`classes`;
    * ``icon`` ``[1, 3, 128, 128]`` uint8: the RGB icon on white;
    * ``name`` (str): the English name, e.g. ``'Bar stool'``;
    * ``name_masked`` (str): the name with class-revealing words replaced
      by ``<mask>`` (``'bar <mask>'``), for text models that must not read
      the label off the name;
    * ``item_id`` (str): the catalogue id.

    Turn the points into octree hierarchies on access with
    :class:`hsa_graph.transforms.PointCloudToHierarchy` (which wraps
    :func:`hsa_graph.from_point_cloud`)::

        >>> from hsa_graph.transforms import PointCloudToHierarchy
        >>> ds = SweetHome3DFurniture('data/furniture',  # doctest: +SKIP
        ...                           transform=PointCloudToHierarchy(
        ...                               leaf_size=16))
        >>> ds[0]  # a Hierarchy: leaf i is point i, y carried over

    Args:
        root (str): root directory of the dataset.
        split (str): ``'train'`` or ``'test'``. (default: :obj:`'train'`)
        num_points (int): points sampled per model. (default: :obj:`2048`)
        seed (int): base seed of the surface sampling. (default: :obj:`0`)
        catalogue_dir (str, optional): directory holding the ``.sh3f``
            files. (default: ``$HSA_SH3D_DIR`` or
            ``/usr/share/sweethome3d/furniture``)
        transform (callable, optional): applied on every access.
        pre_transform (callable, optional): applied once before saving.
        pre_filter (callable, optional): keeps the examples it accepts.
        force_reload (bool): reprocess even if processed files exist.
            (default: :obj:`False`)
    """

    classes: Tuple[str, ...] = FURNITURE_CLASSES

    def __init__(self, root: str, split: str = 'train', num_points: int = 2048,
                 seed: int = 0, catalogue_dir: Optional[str] = None,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False) -> None:
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_points <= 0:
            raise ValueError(f'num_points must be positive, got {num_points}')
        self.split = split
        self.num_points = num_points
        self.seed = seed
        self.catalogue_dir = (catalogue_dir or os.environ.get('HSA_SH3D_DIR')
                              or DEFAULT_CATALOGUE_DIR)
        super().__init__(root, transform, pre_transform, pre_filter,
                         force_reload=force_reload)
        self.load(self.processed_paths[0 if split == 'train' else 1])

    @property
    def raw_file_names(self) -> List[str]:
        found = sorted(glob.glob(osp.join(self.raw_dir, '*.sh3f')))
        if found:
            return [osp.basename(path) for path in found]
        return ['BlendSwap-CC-0.sh3f', 'BlendSwap-CC-BY.sh3f',
                'KatorLegaz.sh3f', 'Reallusion.sh3f', 'Scopia.sh3f']

    @property
    def processed_file_names(self) -> List[str]:
        tag = f'p{self.num_points}_s{self.seed}'
        return [f'train_{tag}.pt', f'test_{tag}.pt']

    def download(self) -> None:
        sources = sorted(glob.glob(osp.join(self.catalogue_dir, '*.sh3f')))
        if not sources:
            raise FileNotFoundError(
                f"No Sweet Home 3D furniture libraries (*.sh3f) in "
                f"'{self.catalogue_dir}'. Install them with `apt-get install "
                f"-y sweethome3d-furniture` (or datasets/fetch_furniture.sh), "
                f"or pass catalogue_dir=...")
        os.makedirs(self.raw_dir, exist_ok=True)
        for path in sources:
            shutil.copy(path, self.raw_dir)

    def process(self) -> None:
        by_class: Dict[str, List[FurnitureItem]] = defaultdict(list)
        for path in self.raw_paths:
            for item, label in labelled_items(read_catalogue(path)):
                by_class[label].append(item)
        if not by_class:
            raise ValueError(f"No labelled furniture found in "
                             f"{self.raw_paths}")
        splits: Dict[str, List[Tuple[FurnitureItem, str]]] = {
            'train': [], 'test': []}
        for label in sorted(by_class):
            ranked = sorted(by_class[label],
                            key=lambda item: id_rank_key(item.item_id))
            for rank, item in enumerate(ranked):
                splits[split_of(item.item_id, rank)].append((item, label))

        archives = {osp.basename(path): zipfile.ZipFile(path)
                    for path in self.raw_paths}
        try:
            for split_id, split in enumerate(('train', 'test')):
                data_list = []
                for item, label in tqdm(splits[split],
                                        desc=f'Furniture {split}'):
                    data = self._load_item(archives[item.archive], item,
                                           label)
                    if self.pre_filter is not None and \
                            not self.pre_filter(data):
                        continue
                    if self.pre_transform is not None:
                        data = self.pre_transform(data)
                    data_list.append(data)
                if not data_list:
                    raise ValueError(
                        f"The {split} split is empty: each class needs at "
                        f"least 5 items for one to go to the test split")
                self.save(data_list, self.processed_paths[split_id])
        finally:
            for archive in archives.values():
                archive.close()

    def _load_item(self, archive: zipfile.ZipFile, item: FurnitureItem,
                   label: str) -> Data:
        pos, face = _read_obj_member(archive, item.model)
        pos = _to_catalogue_frame(pos, item)
        try:
            points = sample_surface(pos, face, self.num_points,
                                    seed=stable_seed(self.seed, item.item_id))
        except ValueError as error:
            raise ValueError(f"Cannot sample '{item.name}' ({item.model} in "
                             f'{item.archive}): {error}') from None
        icon = _read_icon(archive.read(item.icon))
        return Data(pos=normalize_unit_sphere(points.float()),
                    y=torch.tensor([self.classes.index(label)]),
                    icon=icon.unsqueeze(0), name=item.name,
                    name_masked=' '.join(mask_class_words(item.name)),
                    item_id=item.item_id)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self)}, split={self.split}, '
                f'num_points={self.num_points})')


def _read_obj_member(archive: zipfile.ZipFile, member: str) -> Tuple[Tensor,
                                                                  Tensor]:
    r"""Vertices (float64) and triangles of an OBJ file inside the archive,
    read with :func:`hsa_graph.read_mesh` from a temporary copy. Faces with
    fewer than three corners (line segments, no area) are dropped."""
    lines = archive.read(member).splitlines(keepends=True)
    # A few models carry line segments ('f a b'): they have no area, so
    # they are dropped rather than rejected.
    lines = [line for line in lines
             if not (line.startswith(b'f ') and len(line.split()) < 4)]
    with tempfile.TemporaryDirectory() as folder:
        path = osp.join(folder, 'model.obj')
        with open(path, 'wb') as handle:
            handle.writelines(lines)
        mesh = read_mesh(path)
    return mesh.pos.double(), mesh.face


def _to_catalogue_frame(pos: Tensor, item: FurnitureItem) -> Tensor:
    r"""Applies the item's model rotation, stretches its bounding box to the
    catalogue size (Sweet Home 3D's y-up frame), then turns it z-up."""
    if item.model_rotation is not None:
        rotation = torch.tensor(item.model_rotation,
                                dtype=pos.dtype).view(3, 3)
        pos = pos @ rotation.t()
    extent = pos.amax(0) - pos.amin(0)
    width, height, depth = item.size
    target = torch.tensor([width, height, depth], dtype=pos.dtype)
    scale = torch.where((extent > 0) & (target > 0),
                        target / extent.clamp_min(1e-12),
                        torch.ones_like(extent))
    pos = pos * scale
    # y-up -> z-up: (x, y, z) -> (x, -z, y), a rotation about x.
    return torch.stack([pos[:, 0], -pos[:, 2], pos[:, 1]], dim=1)


def _read_icon(raw: bytes) -> Tensor:
    try:
        from PIL import Image
    except ImportError as error:  # Pillow comes with matplotlib
        raise ImportError("Reading the furniture icons needs Pillow: "
                          "pip install 'hsa-graph[plot]'") from error
    image = Image.open(io.BytesIO(raw)).convert('RGBA')
    if image.size != (ICON_SIZE, ICON_SIZE):
        image = image.resize((ICON_SIZE, ICON_SIZE))
    background = Image.new('RGBA', image.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(background, image).convert('RGB')
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.view(ICON_SIZE, ICON_SIZE, 3).permute(2, 0, 1).contiguous()
