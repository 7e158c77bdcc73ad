"""Job handlers, one module per family; importing this package registers them all."""

from app.handlers import inbound, scoring, sync, ticks
from app.handlers.deps import Providers

__all__ = ["Providers", "inbound", "scoring", "sync", "ticks"]
