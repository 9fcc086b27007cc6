r"""Functional HSA operators and tree passes."""
__all__ = []
