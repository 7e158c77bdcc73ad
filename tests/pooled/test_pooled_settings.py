"""When DATABASE_URL counts as pooled (transaction mode), and what follows from it."""

from __future__ import annotations

import pytest

from app.settings import Settings

NEON_POOLER = "postgresql://u:p@ep-cool-name-123-pooler.eu-central-1.aws.neon.tech/db"
NEON_DIRECT = "postgresql://u:p@ep-cool-name-123.eu-central-1.aws.neon.tech/db"
SUPABASE = "postgresql://postgres.abcdefghij:p@aws-0-eu-central-1.pooler.supabase.com"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


def test_pooled_mode_is_detected_from_neon_pooler_hosts_and_can_be_forced():
    assert settings(database_url=NEON_POOLER).pooled is True
    assert settings(database_url=NEON_DIRECT).pooled is False
    assert settings(database_url=NEON_DIRECT, database_pooled=True).pooled is True
    assert settings(database_url=NEON_POOLER, database_pooled=False).pooled is False
    # Migrations and LISTEN go to the direct host when one is given.
    assert settings(database_url=NEON_POOLER, database_direct_url=NEON_DIRECT).direct_url == (
        NEON_DIRECT
    )
    assert settings(database_url=NEON_POOLER).direct_url == NEON_POOLER


@pytest.mark.parametrize(
    ("url", "pooled"),
    [
        (f"{SUPABASE}:6543/postgres", True),  # transaction mode
        (f"{SUPABASE}:5432/postgres", False),  # session mode: LISTEN and prepared statements work
        (f"{SUPABASE}/postgres", False),  # the default port, 5432
        (f"{SUPABASE.replace('pooler.supabase.com', 'POOLER.Supabase.com')}:6543/db", True),
        ("postgresql://u:p@db.abcdefghij.supabase.co:6543/postgres", False),
        ("postgresql://u:p@localhost:6543/postgres", False),
    ],
)
def test_supabase_transaction_mode_is_detected_by_host_and_port(url: str, pooled: bool):
    assert settings(database_url=url).pooled is pooled


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_database_pooled_means_detect(monkeypatch, value: str):
    monkeypatch.setenv("DATABASE_POOLED", value)
    monkeypatch.setenv("DATABASE_URL", NEON_POOLER)
    assert Settings(_env_file=None).pooled is True
    monkeypatch.setenv("DATABASE_URL", NEON_DIRECT)
    assert Settings(_env_file=None).pooled is False


@pytest.mark.parametrize(("value", "pooled"), [("true", True), ("false", False)])
def test_database_pooled_in_the_environment_wins(monkeypatch, value: str, pooled: bool):
    monkeypatch.setenv("DATABASE_POOLED", value)
    monkeypatch.setenv("DATABASE_URL", NEON_POOLER if not pooled else NEON_DIRECT)
    assert Settings(_env_file=None).pooled is pooled


def test_listening_goes_through_the_pooler_only_without_a_direct_url():
    assert settings(database_url=NEON_POOLER).listens_through_pooler is True
    assert (
        settings(database_url=NEON_POOLER, database_direct_url=NEON_DIRECT).listens_through_pooler
        is False
    )
    assert settings(database_url=NEON_DIRECT).listens_through_pooler is False
    assert settings(database_url=NEON_DIRECT, database_pooled=True).listens_through_pooler is True
    assert settings().listens_through_pooler is False
