"""Settings: invalid values stop start-up with one line; defaults, `.env` and extras."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import Settings
from tests.conftest import WEBHOOK_SECRET

ROOT = Path(__file__).resolve().parents[1]

CONTRACT_NAMES = [
    "DATABASE_URL",
    "API_TOKEN",
    "CRON_SECRET",
    "WEBHOOK_SECRET",
    "SMS_PROVIDER_URL",
    "SMS_PROVIDER_KEY",
    "EMAIL_PROVIDER_URL",
    "EMAIL_PROVIDER_KEY",
    "AI_PROVIDER_URL",
    "AI_PROVIDER_KEY",
    "AI_MODEL",
    "RUNNER_MAX_DURATION_S",
    "RUNNER_SAFETY_MARGIN_S",
    "RUNNER_CONCURRENCY",
    "JOB_TIMEOUT_S",
    "LEASE_GRACE_S",
    "PROVIDER_TIMEOUT_S",
]


def import_app(**variables: str) -> subprocess.CompletedProcess[str]:
    """`import app.main` in a fresh interpreter that sees only these settings."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(ROOT))}
    env.update(variables)
    return subprocess.run(  # noqa: S603  (our own interpreter, fixed arguments)
        [sys.executable, "-c", "import app.main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


INVALID = [
    ("RUNNER_CONCURRENCY", "abc"),
    ("RUNNER_CONCURRENCY", "0"),
    ("JOB_TIMEOUT_S", "-1"),
    ("DATABASE_URL", "mysql://x"),
    ("WEBHOOK_SECRET", "notbase64!!"),
    ("RUNNER_SAFETY_MARGIN_S", "900"),
    ("SMS_PROVIDER_URL", "ftp://x"),
    # Guessable secrets: tokens under 16 characters, a webhook key under 24 bytes.
    ("API_TOKEN", "fifteen-chars15"),
    ("CRON_SECRET", "short-secret"),
    ("WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"k" * 23).decode()),
    # Not a Fernet key (32 url-safe base64 bytes), alone or after a valid one.
    ("ENCRYPTION_KEYS", "not-a-fernet-key"),
    ("ENCRYPTION_KEYS", base64.urlsafe_b64encode(b"k" * 32).decode() + ",short"),
    ("EMAIL_PROVIDER_KIND", "mailgun"),
    ("RESEND_FROM", "not an address"),
    ("RESEND_API_URL", "ftp://api.resend.com"),
]


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v}" for n, v in INVALID])
def test_invalid_value_stops_start_up_with_one_line(name, value):
    result = import_app(**{name: value})
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    # One clear line, not a traceback or a pydantic report.
    assert len(lines) == 1, result.stderr
    assert name in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_invalid_secret_is_not_echoed():
    result = import_app(WEBHOOK_SECRET="whsec_leakycanary12")
    assert result.returncode != 0
    assert "WEBHOOK_SECRET" in result.stderr
    assert "leakycanary" not in result.stderr + result.stdout


@pytest.mark.parametrize("value", ["whsec_abc*def", "whsec_$$$$abcd", "whsec_"])
def test_webhook_secret_must_be_base64(value):
    # Characters outside base64 mean a mangled secret; accepting it would only surface later
    # as every delivery failing its signature check.
    result = import_app(WEBHOOK_SECRET=value)
    assert result.returncode != 0, "accepted a WEBHOOK_SECRET that is not base64"
    assert "WEBHOOK_SECRET" in result.stderr


def test_secrets_at_their_minimum_lengths_are_accepted():
    settings = Settings(
        _env_file=None,
        api_token="a" * 16,
        cron_secret="c" * 16,
        webhook_secret="whsec_" + base64.b64encode(b"k" * 24).decode(),
    )
    assert settings.api_token == "a" * 16


def test_an_empty_database_pooled_means_unset(monkeypatch):
    monkeypatch.setenv("DATABASE_POOLED", "")
    pooler = "postgresql://u:p@ep-cool-name-123-pooler.eu-central-1.aws.neon.tech/db"
    assert Settings(_env_file=None, database_url=pooler).pooled is True
    direct = "postgresql://u:p@db.example.com/db"
    assert Settings(_env_file=None, database_url=direct).pooled is False


def test_valid_environment_imports():
    result = import_app(
        DATABASE_URL="postgresql://user:pw@db.example:5432/handoff",
        API_TOKEN="a-valid-api-token",
        CRON_SECRET="a-valid-cron-secret",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        SMS_PROVIDER_URL="https://sms.example",
        RUNNER_MAX_DURATION_S="300",
        RUNNER_SAFETY_MARGIN_S="20",
        RUNNER_CONCURRENCY="8",
        JOB_TIMEOUT_S="60",
        SOME_OTHER_VARIABLE="ignored",
    )
    assert result.returncode == 0, result.stderr


def test_empty_environment_imports():
    # Nothing set at all is the local default, not an error.
    result = import_app()
    assert result.returncode == 0, result.stderr


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No contract variable from the outer environment, and a cwd without a `.env`."""
    for name in CONTRACT_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_match_the_contract(clean_env):
    settings = Settings()
    assert settings.runner_max_duration_s == 800
    assert settings.runner_safety_margin_s == 15
    assert settings.runner_concurrency == 4
    assert settings.job_timeout_s == 120
    assert settings.lease_grace_s == 30
    assert settings.provider_timeout_s == 10
    # Unset secrets stay unset, so their routes fail closed.
    assert settings.cron_secret is None
    assert settings.webhook_secret is None


def test_environment_overrides_defaults(clean_env, monkeypatch):
    monkeypatch.setenv("RUNNER_CONCURRENCY", "9")
    monkeypatch.setenv("PROVIDER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@h/db")
    settings = Settings()
    assert settings.runner_concurrency == 9
    assert settings.provider_timeout_s == 2.5
    assert settings.database_url == "postgresql+asyncpg://u@h/db"


def test_dotenv_is_honoured(clean_env, monkeypatch):
    (clean_env / ".env").write_text(
        "RUNNER_CONCURRENCY=7\n"
        "JOB_TIMEOUT_S=33\n"
        "CRON_SECRET=cron-secret-from-dotenv\n"
        "DATABASE_URL=postgresql://u@h/fromdotenv\n"
        "SOMETHING_UNRELATED=whatever\n"
    )
    settings = Settings()
    assert settings.runner_concurrency == 7
    assert settings.job_timeout_s == 33
    assert settings.cron_secret == "cron-secret-from-dotenv"
    assert settings.database_url == "postgresql://u@h/fromdotenv"

    # A real environment variable beats the file, as with any dotenv loader.
    monkeypatch.setenv("RUNNER_CONCURRENCY", "3")
    assert Settings().runner_concurrency == 3


def test_unknown_variables_are_ignored(clean_env, monkeypatch):
    monkeypatch.setenv("RUNNER_SPEED", "ludicrous")
    monkeypatch.setenv("HANDOFF_SOMETHING", "x")
    monkeypatch.setenv("JOB_TIMEOUT", "not-a-number")
    settings = Settings()
    assert settings.job_timeout_s == 120
    assert not hasattr(settings, "runner_speed")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"EMAIL_PROVIDER_KIND": "resend", "RESEND_FROM": "a@b.example"}, "RESEND_API_KEY"),
        ({"EMAIL_PROVIDER_KIND": "resend", "RESEND_API_KEY": "re_secretcanary"}, "RESEND_FROM"),
    ],
)
def test_resend_kind_needs_its_key_and_from(variables, named):
    result = import_app(**variables)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "secretcanary" not in result.stderr + result.stdout


def test_resend_settings_are_read():
    settings = Settings(
        _env_file=None,
        email_provider_kind="resend",
        resend_api_key="re_123456789",
        resend_from="Acme <hello@acme.example>",
        resend_api_url="http://127.0.0.1:9/resend/",
    )
    assert settings.resend_api_url == "http://127.0.0.1:9/resend"
    assert Settings(_env_file=None).resend_api_url == "https://api.resend.com"
    assert Settings(_env_file=None).email_provider_kind == "generic"
