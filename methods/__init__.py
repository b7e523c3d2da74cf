"""Hashing methods: the contract (:class:`HashMethod`), the registry and every method.

Every method module is imported explicitly below, so a method that fails to import fails loudly
instead of silently vanishing from the registry (tests check every subclass is registered).
"""

from methods.base import (
    HashMethod,
    NotFittedError,
    get_method,
    list_methods,
    register,
    register_variant,
    registry,
)
from methods.deep import dhn, dnnh, dpah, dsh, hashnet, pairwise, pointwise, ssdh  # noqa: F401

# Explicit imports: each module registers its classes.
from methods.shallow import itq, ksh, lsh, sdh  # noqa: F401

__all__ = [
    "HashMethod",
    "NotFittedError",
    "get_method",
    "list_methods",
    "register",
    "register_variant",
    "registry",
]
