"""The app as a non-editable install runs it: built into a wheel, unpacked away from the checkout.

On Vercel the builder installs the project into `_vendor/` and imports `app` from there, and
any `pip install .` does the same in site-packages; only what the wheel carries exists then.
The venv holds the project installed editable, so each probe runs in a subprocess whose
PYTHONPATH puts the unpacked wheel first and whose working directory is outside the checkout,
and it checks that `app` really came from the wheel.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.migrations import MigrationsNotFound, find_migrations

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import app
import app.main
from fastapi.testclient import TestClient
from app.api.health import schema_head
from app.migrations import MigrationsNotFound
from app.queue.sql import QUERIES

out = {"app": app.__file__, "queries": sorted(QUERIES)}
client = TestClient(app.main.app)  # no lifespan: no database needed for these
for path in ("/", "/static/dashboard.css", "/static/dashboard.js"):
    response = client.get(path)
    out[path] = [response.status_code, len(response.content)]
try:
    out["head"] = schema_head()
except MigrationsNotFound as exc:
    out["missing"] = str(exc)
if len(sys.argv) > 1:
    with TestClient(app.main.app) as live:  # with lifespan: the database of DATABASE_URL
        response = live.get("/readyz")
        out["readyz"] = [response.status_code, response.json()]
print(json.dumps(out))
"""


def data_files() -> list[str]:
    """Every file under app/ that is not Python: what the app reads at run time."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".py", ".pyc"}
    )


def checkout_head() -> str:
    return ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of its build inputs (the checkout stays clean)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    dist = base / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--no-cache-dir", "--wheel-dir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = dist.glob("handoff-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked, as an installer (or Vercel's `_vendor/`) lays it out."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    """What Vercel's function directory and the image's /app hold beside the installed code:
    alembic.ini and alembic/ (and no app/, so only the wheel's can be imported)."""
    root = tmp_path / "deployed"
    root.mkdir()
    shutil.copy2(ROOT / "alembic.ini", root / "alembic.ini")
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "alembic", root / "alembic", ignore=skip)
    return root


def probe(site: Path, cwd: Path, database_url: str | None = None) -> dict:
    """Import the app from `site` in a fresh interpreter, working in `cwd`, and report."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "PYTHONPATH": str(site),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if database_url:
        env |= {"DATABASE_URL": database_url, "DATABASE_DIRECT_URL": database_url}
    args = [sys.executable, "-c", PROBE] + (["--ready"] if database_url else [])
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The checkout's editable install must not be what answered.
    assert Path(report["app"]).resolve().is_relative_to(site.resolve()), report["app"]
    return report


def test_the_wheel_carries_every_file_the_app_reads(wheel: Path):
    assert "app/queue/queries.sql" in data_files()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [path for path in data_files() if path not in names]
    assert not missing, f"not in the wheel (package-data in pyproject.toml): {missing}"


def test_the_installed_app_loads_its_sql_templates_and_static_files(site: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = probe(site, elsewhere)
    source = (ROOT / "app" / "queue" / "queries.sql").read_text()
    assert report["queries"] and all(f"-- {name} --" in source for name in report["queries"])
    for path in ("/", "/static/dashboard.css", "/static/dashboard.js"):
        status, size = report[path]
        assert status == 200 and size > 0, (path, report[path])


async def test_the_installed_app_finds_the_migrations_in_its_working_directory(
    site: Path, project_root: Path, database_url: str
):
    report = await asyncio.to_thread(probe, site, project_root, database_url)
    assert report["head"] == checkout_head()
    status, body = report["readyz"]
    assert status == 200 and body["schema"] == checkout_head(), report["readyz"]


async def test_without_migrations_readyz_answers_503_and_says_where_it_looked(
    site: Path, tmp_path: Path, database_url: str
):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = await asyncio.to_thread(probe, site, empty, database_url)
    message = report["missing"]
    assert "\n" not in message and "alembic.ini" in message
    # Both places it looked (tmp paths are already resolved, as the message's are).
    assert str(empty) in message and str(site) in message
    status, body = report["readyz"]
    assert status == 503 and body["error"] == "migrations_not_found", report["readyz"]


def test_find_migrations_takes_the_first_place_that_holds_them(tmp_path: Path, project_root):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert find_migrations([bare, project_root]) == project_root / "alembic.ini"
    assert find_migrations([ROOT, project_root]) == ROOT / "alembic.ini"
    # alembic.ini alone is not enough: the scripts must be beside it.
    (bare / "alembic.ini").write_text("[alembic]\n")
    assert find_migrations([bare, project_root]) == project_root / "alembic.ini"
    with pytest.raises(MigrationsNotFound, match="no migrations"):
        find_migrations([bare])


def test_the_checkout_finds_its_own_migrations_from_any_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_migrations() == ROOT / "alembic.ini"
