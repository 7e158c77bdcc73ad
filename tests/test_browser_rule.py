"""The browser tests' rule: without Chromium they are skipped with a reason, except under CI,
where they fail, so a CI run can never pass without having driven the dashboard."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.conftest import ROOT

BROWSER_TEST = "tests/test_dashboard.py::test_sign_in_form_and_wrong_token"


def run_browser_test(**env: str) -> subprocess.CompletedProcess[str]:
    """That test in a pytest of its own, with Chromium looked for where there is none."""
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment |= {"HANDOFF_TEST_CHROMIUM": str(ROOT / "no-such-chromium"), **env}
    return subprocess.run(
        [sys.executable, "-m", "pytest", BROWSER_TEST, "-q", "-rsE", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_without_chromium_the_browser_tests_skip_except_under_ci_where_they_fail():
    elsewhere, under_ci = await asyncio.gather(
        asyncio.to_thread(run_browser_test), asyncio.to_thread(run_browser_test, CI="true")
    )

    assert elsewhere.returncode == 0, elsewhere.stdout[-3000:]
    assert "1 skipped" in elsewhere.stdout and "passed" not in elsewhere.stdout
    assert "need Chromium at" in elsewhere.stdout and "no-such-chromium" in elsewhere.stdout

    assert under_ci.returncode == 1, under_ci.stdout[-3000:]
    assert "skipped" not in under_ci.stdout
    assert "1 error" in under_ci.stdout or "1 failed" in under_ci.stdout, under_ci.stdout[-3000:]
    assert "CI is set and the dashboard's browser tests need Chromium" in under_ci.stdout
