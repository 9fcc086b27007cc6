r"""Neural-network layers built on HSA."""
__all__ = []
