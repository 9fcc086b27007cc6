r"""Neural-network layers built on HSA."""
from .conv import AttentionWeights, HSAConv
from .positional import (FamilyPositionEncoder, FourierPositionEncoder,
                         KeyPositionEncoder)
from .encoder import HSAEncoderLayer, HSAEncoder
from .pooling import leaf_mean_pool, pool_to_depth
from .classifier import HierarchyClassifier
from .gps import HSAGlobalAttention, HSAGPSConv

__all__ = ['HSAConv', 'AttentionWeights']
__all__ += ['HSAEncoderLayer', 'HSAEncoder', 'FamilyPositionEncoder',
            'FourierPositionEncoder', 'KeyPositionEncoder', 'leaf_mean_pool',
            'pool_to_depth', 'HierarchyClassifier', 'HSAGlobalAttention',
            'HSAGPSConv']
