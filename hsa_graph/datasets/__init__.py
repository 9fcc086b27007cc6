__all__ = []
from .furniture import SweetHome3DFurniture  # noqa: E402
from ._sweethome3d_catalogue import (FURNITURE_CLASSES,  # noqa: E402
                                     classify_furniture, mask_class_words)
__all__ += ['SweetHome3DFurniture', 'FURNITURE_CLASSES',
            'classify_furniture', 'mask_class_words']
from .modelnet import ModelNetPoints  # noqa: E402
from .cgal_segmentation import CGALSegmentation  # noqa: E402
__all__ += ['ModelNetPoints', 'CGALSegmentation']
from .text import (AmazonElec, ClothingReviews, IMDB,  # noqa: E402
                   TextHierarchyDataset, TwentyNewsgroups)
__all__ += ['TextHierarchyDataset', 'TwentyNewsgroups', 'ClothingReviews',
            'IMDB', 'AmazonElec']
from .fake import (FakeHierarchyDataset, balanced_parent,  # noqa: E402
                   ragged_parent)
__all__ += ['FakeHierarchyDataset', 'balanced_parent', 'ragged_parent']
from .cora import CoraLINQS  # noqa: E402
__all__ += ['CoraLINQS']
