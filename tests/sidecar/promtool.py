"""Run `promtool check metrics` on exposition text; required (not skipped) when CI=true.

The text must parse, and the lint may say only what it says of Envoy's own /stats/prometheus:
that a counter lacks `_total` (`upstream_rq_retry`) or a gauge has it (`membership_total`).
Envoy types those `counter` and `gauge` under their Envoy names, and so does meshdev."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# promtool's lint lines that Envoy's naming earns (exit status 3 with only these).
ENVOY_NAMING = (
    'counter metrics should have "_total" suffix',
    'non-counter metrics should not have "_total" suffix',
)
LINT_PROBLEMS = 3


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus); required when CI=true")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode == 0:
        return
    said = (result.stdout + result.stderr).splitlines()
    others = [line for line in said if line and not line.endswith(ENVOY_NAMING)]
    assert result.returncode == LINT_PROBLEMS and not others, result.stdout + result.stderr
