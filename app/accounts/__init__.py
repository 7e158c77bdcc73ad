"""Provider accounts per client: which SMS, email and AI provider a client's jobs call, with
its secrets encrypted at rest under ENCRYPTION_KEYS (Fernet)."""

from app.accounts.kinds import (
    KINDS,
    PROVIDER_CHANNELS,
    AccountKind,
    ProviderChannel,
    kind_for,
)
from app.accounts.store import (
    AccountUnreadable,
    StoredAccount,
    delete_account,
    load_account,
    save_account,
)

__all__ = [
    "KINDS",
    "PROVIDER_CHANNELS",
    "AccountKind",
    "AccountUnreadable",
    "ProviderChannel",
    "StoredAccount",
    "delete_account",
    "kind_for",
    "load_account",
    "save_account",
]
