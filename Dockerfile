# One image for the API and the worker; docs/deploy.md shows both.
#   docker build -t handoff .
#   docker run -p 8000:8000 -e DATABASE_URL=... -e API_TOKEN=... handoff
#   docker run --no-healthcheck -e DATABASE_URL=... handoff python -m app.worker

# The builder installs the dependencies into a venv, exactly as uv.lock pins them, so
# whatever a wheel might need to compile stays in this stage and never reaches the final
# image. The base is pinned to a full version: a rebuild gets the same Python.
FROM python:3.12.12-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3.12 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /src
# Only the lock and the project's metadata: this layer, the slow one, is rebuilt when they
# change and reused on a code change. --locked fails the build if uv.lock no longer matches
# pyproject.toml; --no-install-project leaves the code out (the final stage copies it).
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project


FROM python:3.12.12-slim-bookworm

# No .pyc files written at run time (the code is read-only to the service user), and log
# lines leave at once instead of waiting in a buffer a crash would lose.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH"

# A fixed numeric id, so orchestrators that insist on a non-root user (Kubernetes'
# runAsNonRoot) can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 handoff \
    && useradd --system --uid 10001 --gid handoff --no-create-home --no-log-init handoff

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# The source tree beside alembic.ini: `alembic upgrade head`, uvicorn and `python -m
# app.worker` run from here exactly as they do in a checkout (the venv holds only the
# dependencies). Files stay root-owned, so the service can read its code but not change it.
COPY app/ ./app/
COPY alembic/ ./alembic/
COPY alembic.ini ./

USER 10001:10001
EXPOSE 8000

# /healthz answers while the process is up, whatever the database's state: an outage shows
# on /readyz instead, so a database blip never gets a healthy container restarted.
# The slim image has no curl; python's urllib fails (non-zero exit) on errors and non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Migrations first (idempotent, so every start may run them), then the API. `exec` hands
# the shell's process over to uvicorn, so `docker stop`'s SIGTERM reaches it and it shuts
# down gracefully. --proxy-headers trusts X-Forwarded-* only from FORWARDED_ALLOW_IPS.
CMD ["sh", "-c", "alembic upgrade head && exec uvicorn app.main:app --host 0.0.0.0 --port 8000 --proxy-headers"]
