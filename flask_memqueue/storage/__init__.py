"""Job stores behind one contract (:class:`Storage`)."""

from .base import Storage
from .memory import MemoryStorage

__all__ = ["MemoryStorage", "Storage"]
