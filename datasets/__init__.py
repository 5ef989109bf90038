"""Event data: readers, Tonic datasets, the embedded ndigits set, frames, caching.

The public API lives in :mod:`.registry` (``DATASETS``, ``DatasetInfo``, ``load_dataset``,
``make_loader``) and :mod:`.events` (``read_events``, ``EventStream``); the registry names are
re-exported lazily so that reading an event file does not import torch.
"""
from .events import EventStream, read_events

_REGISTRY_NAMES = ("DATASETS", "DatasetInfo", "load_dataset", "make_loader")
__all__ = ["EventStream", "read_events", *_REGISTRY_NAMES]


def __getattr__(name):
    if name in _REGISTRY_NAMES:
        from . import registry  # lazy: registry imports torch, 2.4 s (measured)
        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
