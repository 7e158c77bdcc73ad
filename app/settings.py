"""Settings, read once from the environment (and `.env`), named exactly as the contract names them.

An invalid value stops start-up with one line naming the setting; see `load_settings`.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from email.utils import parseaddr
from functools import cached_property, lru_cache
from typing import Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, MultiFernet
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Bearer tokens shorter than this are guessable; a Standard Webhooks key shorter than this is
# below what the scheme's own secrets (24 random bytes) carry.
MIN_TOKEN_CHARS = 16
MIN_WEBHOOK_KEY_BYTES = 24
# Supabase's pooler answers session mode on 5432 and transaction mode on this port.
SUPABASE_TRANSACTION_PORT = 6543


def check_webhook_secret(value: str) -> str:
    """The value if it is a Standard Webhooks secret with a long enough key, else ValueError
    (whose message never quotes the value)."""
    raw = value.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
    if len(decoded) < MIN_WEBHOOK_KEY_BYTES:
        raise ValueError(f"its key must be at least {MIN_WEBHOOK_KEY_BYTES} bytes")
    return value


# A phone number as Twilio takes it (E.164): "+", a country code, at most 15 digits in all.
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# A Twilio sender: an E.164 number, or a Messaging Service SID.
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")


def check_twilio_sender(value: str) -> str:
    """The value if it is an E.164 number or a Messaging Service SID (`MG` + 32 hex), else
    ValueError."""
    if not (E164.fullmatch(value) or MESSAGING_SERVICE_SID.fullmatch(value)):
        raise ValueError("must be an E.164 number (+15551234567) or a Messaging Service SID (MG…)")
    return value


def check_email_address(value: str) -> str:
    """The value if it is an address (`a@b.c` or `Name <a@b.c>`), else ValueError (whose
    message never quotes the value)."""
    address = parseaddr(value)[1]
    local, at, domain = address.partition("@")
    if not (local and at and "." in domain) or any(ch.isspace() for ch in address):
        raise ValueError("must be an email address, or `Name <address>`")
    return value.strip()


def split_keys(value: str | None) -> list[str]:
    """The comma-separated keys of ENCRYPTION_KEYS, in order, blanks dropped."""
    return [key.strip() for key in (value or "").split(",") if key.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, frozen=True
    )

    # Postgres to use: postgresql:// or postgresql+asyncpg://, pooled or direct.
    # Unset means the embedded default, which only the local run and the tests start.
    database_url: str | None = None
    # A direct (unpooled) connection to the same database, for migrations and LISTEN, which a
    # transaction-mode pooler cannot carry. Unset: DATABASE_URL serves for both.
    database_direct_url: str | None = None
    # DATABASE_URL goes through PgBouncer in transaction mode (as Neon's -pooler hosts and
    # Supabase's pooler on port 6543 do): no prepared statements kept, no session state.
    # Unset (or empty): detected from the URL's host and port, see `pooled`.
    database_pooled: bool | None = None
    # Finished jobs are pruned this many days after they finish; failed ones after the second.
    job_retention_days: float = Field(7, gt=0, le=3650)
    failed_job_retention_days: float = Field(30, gt=0, le=3650)
    # Bearer token for the API routes; unset means those routes answer 503 (fail closed).
    api_token: str | None = None
    # Bearer token for /api/cron/*; unset means those routes answer 503 (fail closed).
    cron_secret: str | None = None
    # Standard Webhooks secret (whsec_<base64>) for /webhooks/email; unset means 503.
    webhook_secret: str | None = None

    sms_provider_url: str | None = None
    sms_provider_key: str = ""
    email_provider_url: str | None = None
    email_provider_key: str = ""
    # Which API the global email account speaks: `generic` (the contract's, EMAIL_PROVIDER_URL
    # and EMAIL_PROVIDER_KEY) or `resend` (RESEND_API_KEY, RESEND_FROM, RESEND_API_URL).
    email_provider_kind: Literal["generic", "resend"] = "generic"
    # Resend's API key (secret), the address emails go from (on a domain verified at Resend),
    # and its API's base URL.
    resend_api_key: str | None = None
    resend_from: str | None = None
    resend_api_url: str = "https://api.resend.com"
    ai_provider_url: str | None = None
    ai_provider_key: str = ""
    ai_model: str = "gpt-4o-mini"
    # Which API the global SMS account speaks: `generic` (SMS_PROVIDER_URL/KEY, the contract's
    # API, as the sandbox does) or `twilio` (the TWILIO_* settings below, all three required).
    sms_provider_kind: Literal["generic", "twilio"] = "generic"
    # The Twilio account (AC + 32 hex), its auth token (also what signs its webhooks), and the
    # sender: an E.164 number or a Messaging Service SID (MG…).
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    # Twilio's API; another base URL only to test against a Twilio-shaped server (the sandbox).
    twilio_api_url: str = "https://api.twilio.com"
    # The public base URL providers call this service at (https://handoff.example.com), as
    # Twilio signs it: /webhooks/sms answers 503 without it.
    public_url: str | None = None
    # Calls per minute the global accounts allow, shared by every runner and worker (a token
    # bucket in Postgres); a job with no token waits for one without using an attempt. Unset:
    # unlimited. A client's own account has its own `rate_per_min`.
    sms_rate_per_min: float | None = Field(None, gt=0, le=600_000)
    email_rate_per_min: float | None = Field(None, gt=0, le=600_000)
    ai_rate_per_min: float | None = Field(None, gt=0, le=600_000)
    # Fernet keys (comma-separated) for provider accounts' secrets at rest: the first encrypts,
    # every one decrypts, so a key rotates by going in front, `python -m app.accounts rotate`,
    # then dropping the old one. Unset: provider accounts cannot be stored (503).
    encryption_keys: str | None = None

    # The runner function's maxDuration on Vercel; the runner's budget is this minus the margin.
    runner_max_duration_s: float = Field(800, gt=0, le=86_400)
    # Time kept free before maxDuration to cancel, release and answer.
    runner_safety_margin_s: float = Field(15, ge=0)
    # Jobs run at once inside one runner invocation (or one worker).
    runner_concurrency: int = Field(4, ge=1, le=256)
    # The most jobs of one client running at once, across every runner and worker together
    # (jobs of no client are not capped). Unset: half of RUNNER_CONCURRENCY, at least 1.
    client_concurrency: int | None = Field(None, ge=1, le=256)
    # Longest one job attempt may run; a handler may ask for less, never more.
    job_timeout_s: float = Field(120, gt=0, le=86_400)
    # Extra time before a crashed runner's job may be reclaimed: the lease is
    # JOB_TIMEOUT_S + LEASE_GRACE_S, so it always outlasts the attempt it covers.
    lease_grace_s: float = Field(30, ge=0, le=86_400)
    # How often an idle worker looks for due jobs when no notification wakes it.
    worker_poll_interval_s: float = Field(1, gt=0, le=3_600)
    # How long a stopping worker lets running jobs finish before it releases them.
    worker_grace_s: float = Field(10, ge=0, le=3_600)
    # Bound on each outbound HTTP call, the whole call including a slow body.
    provider_timeout_s: float = Field(10, gt=0, le=3_600)

    # The runner route to call once an enqueue has committed a due job, so a runner starts at
    # once (app/kick.py); unset: none, except on Vercel, where it defaults to the deployment's
    # own runner route. The kick authenticates with CRON_SECRET.
    runner_kick_url: str | None = None
    # Kicked runners on their way or running at once, across every process.
    runner_kick_max: int = Field(4, ge=1, le=64)
    # Tracing (app/tracing.py): spans go to this OTLP/HTTP collector (e.g.
    # http://127.0.0.1:4318); unset, tracing is off. Needs the `otel` extra. The other standard
    # OTEL_* variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER…) are
    # read by the OpenTelemetry SDK itself.
    otel_exporter_otlp_endpoint: str | None = None
    # Set by Vercel itself (system environment variables): where the kick goes by default,
    # and the secret that lets it past Deployment Protection.
    vercel_env: str | None = None
    vercel_url: str | None = None
    vercel_project_production_url: str | None = None
    vercel_automation_bypass_secret: str | None = None

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s):// URL")
        return value

    @field_validator("database_url", "database_direct_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0]
        if "://" not in value or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
            raise ValueError("must be a postgresql:// or postgresql+asyncpg:// URL")
        return value

    @field_validator("sms_provider_url", "email_provider_url", "ai_provider_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("resend_from")
    @classmethod
    def _from_address(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return check_email_address(value)

    @field_validator("twilio_api_url", "resend_api_url")
    @classmethod
    def _vendor_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("twilio_account_sid", "twilio_auth_token", "twilio_from", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("twilio_account_sid")
    @classmethod
    def _account_sid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"AC[0-9a-fA-F]{32}", value):
            raise ValueError("must be a Twilio account SID: AC followed by 32 hex digits")
        return value

    @field_validator("twilio_auth_token")
    @classmethod
    def _auth_token(cls, value: str | None) -> str | None:
        if value is not None and not all("!" <= ch <= "~" for ch in value):
            raise ValueError("must be visible ASCII characters without spaces")
        return value

    @field_validator("twilio_from")
    @classmethod
    def _twilio_from(cls, value: str | None) -> str | None:
        return None if value is None else check_twilio_sender(value)

    @model_validator(mode="after")
    def _twilio_complete(self) -> Settings:
        if self.sms_provider_kind == "twilio":
            for name in ("twilio_account_sid", "twilio_auth_token", "twilio_from"):
                if not getattr(self, name):
                    raise ValueError(f"SMS_PROVIDER_KIND=twilio needs {name.upper()}")
        return self

    @model_validator(mode="after")
    def _resend_needs_key_and_from(self) -> Settings:
        if self.email_provider_kind == "resend":
            if not self.resend_api_key:
                raise ValueError("EMAIL_PROVIDER_KIND=resend needs RESEND_API_KEY")
            if not self.resend_from:
                raise ValueError("EMAIL_PROVIDER_KIND=resend needs RESEND_FROM")
        return self

    @field_validator("encryption_keys")
    @classmethod
    def _fernet_keys(cls, value: str | None) -> str | None:
        keys = split_keys(value)
        for position, key in enumerate(keys, start=1):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise ValueError(
                    f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes, "
                    "as Fernet.generate_key() makes)"
                ) from None
        return ",".join(keys) or None

    @field_validator(
        "database_pooled",
        "client_concurrency",
        "sms_rate_per_min",
        "email_rate_per_min",
        "ai_rate_per_min",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_token", "cron_secret")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if len(value) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return check_webhook_secret(value)

    @field_validator("runner_kick_url")
    @classmethod
    def _kick_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _kick_needs_cron_secret(self) -> Settings:
        if self.runner_kick_url and not self.cron_secret:
            raise ValueError("RUNNER_KICK_URL needs CRON_SECRET: the kick authenticates with it")
        return self

    @model_validator(mode="after")
    def _margin_below_duration(self) -> Settings:
        if self.runner_safety_margin_s >= self.runner_max_duration_s:
            raise ValueError("RUNNER_SAFETY_MARGIN_S must be below RUNNER_MAX_DURATION_S")
        return self

    @cached_property
    def encryption(self) -> MultiFernet | None:
        """ENCRYPTION_KEYS as one MultiFernet (the first key encrypts), or None when unset."""
        keys = split_keys(self.encryption_keys)
        return MultiFernet([Fernet(key) for key in keys]) if keys else None

    @property
    def runner_budget_s(self) -> float:
        """The most one runner invocation may spend before it must answer."""
        return self.runner_max_duration_s - self.runner_safety_margin_s

    @property
    def lease_s(self) -> float:
        return self.job_timeout_s + self.lease_grace_s

    @property
    def pooled(self) -> bool:
        """Whether DATABASE_URL goes through a transaction-mode pooler: Neon's `-pooler`
        hosts, and Supabase's pooler (`*.pooler.supabase.com`) on its transaction port."""
        if self.database_pooled is not None:
            return self.database_pooled
        if not self.database_url:
            return False
        parts = urlsplit(self.database_url)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        supabase = host.endswith("pooler.supabase.com") and port == SUPABASE_TRANSACTION_PORT
        return "-pooler" in host or supabase

    @property
    def listens_through_pooler(self) -> bool:
        """LISTEN would go through a transaction-mode pooler, which never delivers to it."""
        return self.pooled and not self.database_direct_url

    @property
    def direct_url(self) -> str | None:
        """Where migrations and LISTEN connect."""
        return self.database_direct_url or self.database_url


def describe_error(error: ValidationError) -> str:
    """One line naming the first bad setting as the environment spells it."""
    first = error.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"invalid setting {name}: {message}" if name else f"invalid setting: {message}"


def load_settings(**overrides: object) -> Settings:
    """Read settings; on a bad value print one line and exit with status 2."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        print(f"handoff: {describe_error(error)}", file=sys.stderr)
        raise SystemExit(2) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
