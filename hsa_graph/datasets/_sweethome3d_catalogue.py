r"""Reading Sweet Home 3D furniture libraries (``.sh3f`` zip archives) and the
deterministic name -> class map behind :class:`SweetHome3DFurniture`.

Kept apart from the dataset class so that the class map can be read, tested
and reused (e.g. to label other Sweet Home 3D libraries) without torch.
"""
from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

__all__ = ['FurnitureItem', 'FURNITURE_CLASSES', 'FURNITURE_CLASS_RULES',
           'read_catalogue', 'classify_furniture', 'mask_class_words',
           'split_of', 'CatalogueRule']


@dataclass(frozen=True)
class FurnitureItem:
    r"""One entry of a ``PluginFurnitureCatalog.properties`` file."""
    archive: str            # file name of the .sh3f library
    index: int              # the ``#i`` suffix in the properties file
    item_id: str            # ``id#i``, unique across the libraries
    name: str               # ``name#i``, English
    category: str           # ``category#i``: a room ('Living room', ...)
    model: str              # path of the .obj inside the archive
    icon: str               # path of the 128x128 .png icon
    model_rotation: Optional[Tuple[float, ...]]  # 3x3, row-major
    size: Tuple[float, float, float]  # width, height, depth in cm


@dataclass(frozen=True)
class CatalogueRule:
    r"""A class of the map: an item belongs to it when one of its name words
    is in :obj:`keywords`, or its catalogue category is in
    :obj:`categories`; unless a name word is in :obj:`exclude`, or
    :obj:`require_category` is set and does not hold."""
    label: str
    keywords: FrozenSet[str] = frozenset()
    categories: FrozenSet[str] = frozenset()
    exclude: FrozenSet[str] = frozenset()
    require_category: FrozenSet[str] = frozenset()


# The map is an ordered list: the FIRST rule that matches wins, so the more
# specific classes come first ('Desk lamp' is a lamp, not a table; 'Glass
# door cabinet' is storage, because doors and windows are matched by their
# catalogue category only). It covers 361 of the 820 models of
# sweethome3d-furniture 1.8 (Debian); the remaining items (food, tools,
# switches, animals, ...) are left out, as ModelNet leaves out most objects.
FURNITURE_CLASS_RULES: Tuple[CatalogueRule, ...] = (
    CatalogueRule('person', keywords=frozenset(
        {'male', 'female', 'boy', 'girl', 'mannequin'}),
        require_category=frozenset({'Characters'})),  # not 'Woman shoes'
    CatalogueRule('vehicle', keywords=frozenset({'motorbike'}),
                  categories=frozenset({'Vehicles'})),
    CatalogueRule('plant', keywords=frozenset({
        'plant', 'plants', 'tree', 'ficus', 'bamboo', 'cactus', 'bonsai',
        'yucca', 'palm', 'pine', 'cypress', 'poplar', 'acacia', 'maple',
        'beech', 'bush', 'hedge', 'flowers', 'tulips', 'orchids', 'lily',
        'spathiphyllum', 'blossom'})),
    CatalogueRule('lamp', keywords=frozenset(
        {'lamp', 'lamppost', 'chandelier', 'lantern'}),
        categories=frozenset({'Lights'})),
    CatalogueRule('door_window',
                  categories=frozenset({'Doors and windows'})),
    CatalogueRule('bed', keywords=frozenset({'bed', 'crib'})),
    CatalogueRule('sofa', keywords=frozenset({'sofa', 'couch'})),
    CatalogueRule('chair', keywords=frozenset({'chair', 'armchair',
                                                'stool'})),
    CatalogueRule('table', keywords=frozenset({'table', 'desk'}),
                  exclude=frozenset({'fan', 'bat'})),  # 'Table fan'
    CatalogueRule('storage', keywords=frozenset({
        'bookcase', 'cabinet', 'wardrobe', 'cupboard', 'shelves', 'dresser',
        'chest', 'drawers', 'locker'}),
        exclude=frozenset({'freezer'})),  # 'Chest freezer'
)

#: Class names in label order (``y`` is the index in this tuple).
FURNITURE_CLASSES: Tuple[str, ...] = tuple(
    sorted(rule.label for rule in FURNITURE_CLASS_RULES))

# Words that give the class away in a name. The text modality of the
# multi-modal example replaces them by '<mask>' (otherwise the name alone
# would be a perfect, and pointless, classifier): every keyword of the map,
# plus the nouns of the classes defined by catalogue category.
_CLASS_WORDS: FrozenSet[str] = frozenset().union(
    *(rule.keywords for rule in FURNITURE_CLASS_RULES)) | frozenset(
    {'door', 'doors', 'window', 'windows', 'light', 'lights'})

MASK_TOKEN = '<mask>'


def name_words(name: str) -> List[str]:
    r"""Lower-cased letter runs of a furniture name (``"Captain's bed"`` ->
    ``['captain', 's', 'bed']``)."""
    return re.findall(r'[a-z]+', name.lower())


def classify_furniture(name: str, category: str) -> Optional[str]:
    r"""The class of a catalogue item under :data:`FURNITURE_CLASS_RULES`,
    or :obj:`None` when no rule matches.

    Args:
        name (str): the item's English name, e.g. ``'Bar stool'``.
        category (str): its catalogue category, e.g. ``'Living room'``.
    """
    words = set(name_words(name))
    for rule in FURNITURE_CLASS_RULES:
        if words & rule.exclude:
            continue
        if rule.require_category and category not in rule.require_category:
            continue
        if words & rule.keywords or category in rule.categories:
            return rule.label
    return None


def mask_class_words(name: str) -> List[str]:
    r"""The words of :obj:`name` with every class-revealing word replaced
    by ``'<mask>'``: ``'Bar stool'`` -> ``['bar', '<mask>']``,
    ``'Ford Focus'`` -> ``['ford', 'focus']``.

    Args:
        name (str): a furniture name.
    """
    return [MASK_TOKEN if word in _CLASS_WORDS else word
            for word in name_words(name)]


def split_of(item_id: str, rank_in_class: int, test_every: int = 5) -> str:
    r"""``'test'`` for every :obj:`test_every`-th item of a class (items
    ranked by the CRC-32 of their id), else ``'train'``: a stratified 80/20
    split that does not depend on file order.

    Args:
        item_id (str): unused; kept so the rule reads as a function of the
            item.
        rank_in_class (int): position of the item in its class, sorted by
            :func:`zlib.crc32` of the id.
        test_every (int): period of test items. (default: :obj:`5`)
    """
    del item_id
    return 'test' if rank_in_class % test_every == test_every - 1 else 'train'


def id_rank_key(item_id: str) -> Tuple[int, str]:
    r"""Sort key used by :func:`split_of`'s ranking."""
    return zlib.crc32(item_id.encode('utf-8')), item_id


def _parse_properties(text: str) -> Dict[int, Dict[str, str]]:
    entries: Dict[int, Dict[str, str]] = {}
    for line in text.splitlines():
        match = re.match(r'^(\w+)#(\d+)=(.*)$', line)
        if match:
            key, index, value = match.groups()
            entries.setdefault(int(index), {})[key] = _unescape(value.strip())
    return entries


def _unescape(value: str) -> str:
    # Java .properties escapes non-Latin-1 characters as \uXXXX.
    return re.sub(r'\\u([0-9a-fA-F]{4})',
                  lambda match: chr(int(match.group(1), 16)), value)


def read_catalogue(archive_path: str) -> List[FurnitureItem]:
    r"""Reads the items of one ``.sh3f`` furniture library.

    Args:
        archive_path (str): path of the ``.sh3f`` (zip) file.

    Raises:
        ValueError: if the archive has no ``PluginFurnitureCatalog.properties``.
    """
    with zipfile.ZipFile(archive_path) as archive:
        try:
            raw = archive.read('PluginFurnitureCatalog.properties')
        except KeyError:
            raise ValueError(f"'{archive_path}' is not a Sweet Home 3D "
                             f'furniture library (no '
                             f'PluginFurnitureCatalog.properties)') from None
    # .properties files are Latin-1 by definition.
    entries = _parse_properties(raw.decode('latin-1'))
    name = archive_path.replace('\\', '/').rsplit('/', 1)[-1]
    items = []
    for index, entry in sorted(entries.items()):
        missing = [key for key in ('id', 'name', 'category', 'model', 'icon')
                   if key not in entry]
        if missing:
            raise ValueError(f"Item #{index} of '{archive_path}' lacks "
                             f'{missing}')
        rotation = entry.get('modelRotation')
        items.append(FurnitureItem(
            archive=name, index=index, item_id=entry['id'],
            name=entry['name'], category=entry['category'],
            model=entry['model'].lstrip('/'), icon=entry['icon'].lstrip('/'),
            model_rotation=(tuple(float(v) for v in rotation.split())
                            if rotation else None),
            size=(float(entry.get('width', 0)), float(entry.get('height', 0)),
                  float(entry.get('depth', 0)))))
    return items


def labelled_items(items: Sequence[FurnitureItem]
                   ) -> List[Tuple[FurnitureItem, str]]:
    r"""The items that :func:`classify_furniture` labels, with their label."""
    out = []
    for item in items:
        label = classify_furniture(item.name, item.category)
        if label is not None:
            out.append((item, label))
    return out
