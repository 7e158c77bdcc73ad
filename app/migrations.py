"""Apply Alembic migrations from code (the local run and the tests; deployments use the CLI).

The migrations (alembic.ini and alembic/) sit at the project root, beside app/, not inside the
package. In a checkout that is the package's parent directory. An installed package has no
such parent: on Vercel the builder installs it under `_vendor/`, and the project's own files
(alembic.ini and alembic/ among them) are the function's working directory; the Docker image
runs from /app, which holds them too. So the package's parent is tried first, then the
current directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from alembic.config import Config

from alembic import command

ROOT = Path(__file__).resolve().parents[1]


class MigrationsNotFound(RuntimeError):
    """Neither place holds alembic.ini and alembic/."""


def migration_roots() -> list[Path]:
    """Where to look for alembic.ini, in order: beside the package, then the current directory."""
    roots = [ROOT]
    cwd = Path.cwd().resolve()
    if cwd != ROOT:
        roots.append(cwd)
    return roots


def find_migrations(roots: Iterable[Path] | None = None) -> Path:
    """The alembic.ini of the first root that holds it and the alembic/ scripts beside it."""
    tried = list(roots) if roots is not None else migration_roots()
    for root in tried:
        ini = root / "alembic.ini"
        if ini.is_file() and (root / "alembic" / "env.py").is_file():
            return ini
    places = " or ".join(str(root) for root in tried)
    raise MigrationsNotFound(
        f"handoff: no migrations (alembic.ini and alembic/) in {places}; "
        "run from the project root, where they are deployed beside app/"
    )


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(find_migrations()))
    if url:
        config.attributes["database_url"] = url
    return config


def upgrade_to_head(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
