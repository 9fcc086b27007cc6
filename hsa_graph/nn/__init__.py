r"""Neural-network layers built on HSA."""
from .conv import HSAConv

__all__ = ['HSAConv']
