"""`meshdev watch` targets: `[NAME=]ADMIN_URL`, named by host:port when unnamed; bad ones
are refused with the reason, through the real console script too."""

from __future__ import annotations

import subprocess

import pytest

from meshdev.telemetry.io.targets import TargetError, parse_targets
from tests.support import MESHDEV


def test_urls_are_named_by_host_and_port_unless_named() -> None:
    targets = parse_targets(
        ["http://127.0.0.1:9901/", "front=http://10.0.0.2:15000", "envoy.local", "e=[::1]:9"]
    )
    assert targets == [
        ("127.0.0.1:9901", "http://127.0.0.1:9901"),
        ("front", "http://10.0.0.2:15000"),
        ("envoy.local", "http://envoy.local"),
        ("e", "http://[::1]:9"),
    ]


@pytest.mark.parametrize(
    ("specs", "reason"),
    [
        (["ftp://127.0.0.1:9901"], "is not an admin URL"),
        (["http://"], "is not an admin URL"),
        (["http://127.0.0.1:99999"], "the port is not a number"),
        (["http://127.0.0.1:9901/stats?format=json"], "without ?query"),
        (["a b=http://127.0.0.1:1"], "a name is letters"),
        (["a=http://127.0.0.1:1", "a=http://127.0.0.1:2"], "is already given to"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(specs: list[str], reason: str) -> None:
    with pytest.raises(TargetError, match=reason.replace("?", r"\?")):
        parse_targets(specs)


def test_the_command_refuses_bad_input_before_opening_anything() -> None:
    res = subprocess.run(
        [MESHDEV, "watch", "ftp://localhost:9901"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert "'ftp://localhost:9901' is not an admin URL: expected http://HOST:PORT" in res.stderr
    res = subprocess.run(
        [MESHDEV, "watch", "--interval", "0", "http://127.0.0.1:9901"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "interval must be between 0.05s and 60.0s" in res.stderr
    res = subprocess.run([MESHDEV, "watch"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "give either ADMIN_URLs or --mesh FILE" in res.stderr
