"""Job handlers, one module per family; importing this package registers them all."""

from app.handlers import followups, inbound, reactivations, scoring, sync
from app.handlers.deps import Providers

__all__ = ["Providers", "followups", "inbound", "reactivations", "scoring", "sync"]
