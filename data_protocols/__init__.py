"""Datasets on disk -> benchmark splits (query / database / train [/ val]).

``get_protocol(name).load(data_root, seed)`` returns a :class:`Benchmark`: the items' labels
(N x C multi-hot), their inputs (features or lazily decoded images) and a seeded :class:`Split`
whose hash is recorded in every result. Protocols and sizes: ``data_protocols/README.md``.
"""

from data_protocols import unseen  # noqa: F401 — registers cifar10_unseen, mirflickr25k_unseen
from data_protocols.core import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_ROOT,
    Benchmark,
    DatasetNotFoundError,
    ImageSet,
    Split,
)
from data_protocols.protocols import (
    PROTOCOLS,
    Protocol,
    describe_protocols,
    get_protocol,
    list_protocols,
)
from data_protocols.readers import read_list_file

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_DATA_ROOT",
    "PROTOCOLS",
    "Benchmark",
    "DatasetNotFoundError",
    "ImageSet",
    "Protocol",
    "Split",
    "describe_protocols",
    "get_protocol",
    "list_protocols",
    "read_list_file",
]
