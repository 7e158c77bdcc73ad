"""`python -m app.accounts rotate`: re-encrypt every provider account under the first of
ENCRYPTION_KEYS (see app/accounts/rotation.py for the procedure).

Prints one summary line; exits 1 when an account cannot be decrypted by any key (each is named
by client and channel), 2 when the settings are missing or invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.accounts.rotation import BATCH, Rotation, rotate_accounts
from app.db import make_engine
from app.settings import Settings, load_settings, split_keys


async def rotate(settings: Settings, batch: int) -> Rotation:
    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=1, max_overflow=0, pooled=settings.pooled)
    try:
        return await rotate_accounts(engine, split_keys(settings.encryption_keys), batch=batch)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.accounts", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    rotate_command = commands.add_parser(
        "rotate", help="re-encrypt every provider account under the first of ENCRYPTION_KEYS"
    )
    rotate_command.add_argument("--batch", type=int, default=BATCH, help="accounts per transaction")
    args = parser.parse_args(argv)

    settings = load_settings()
    if not settings.database_url:
        print("handoff: DATABASE_URL is not set", file=sys.stderr)
        return 2
    if not settings.encryption_keys:
        print("handoff: ENCRYPTION_KEYS is not set", file=sys.stderr)
        return 2
    result = asyncio.run(rotate(settings, max(args.batch, 1)))
    print(
        f"rotated {result.rotated} accounts; {result.current} already under the first key; "
        f"{len(result.unreadable)} unreadable"
    )
    for client_id, channel in result.unreadable:
        print(f"unreadable with ENCRYPTION_KEYS: client {client_id}, {channel}", file=sys.stderr)
    return 1 if result.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
