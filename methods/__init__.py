"""Hashing methods: the contract (:class:`HashMethod`), the registry and every method.

Every method module is imported explicitly below, so a method that fails to import fails loudly
instead of silently vanishing from the registry (tests check every subclass is registered).
"""

from methods import reference  # noqa: F401  (reference rows: methods/reference.py)
from methods.base import (
    HashMethod,
    NotFittedError,
    get_method,
    list_methods,
    register,
    register_variant,
    registry,
)

# Explicit imports: each module registers its classes.
from methods.deep import (  # noqa: F401
    dhn,
    dnnh,
    dpah,
    dsdh,
    dsh,
    greedyhash,
    hashnet,
    hbmp,
    pairwise,
    pointwise,
    ssdh,
    talr,
)
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
