"""The capture rules: their text, and `meshdev capture-init` installing them for real with the
machine's iptables in a network namespace of its own (`unshare --net`, as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from meshdev.sidecar.capture.hosts import MARK
from meshdev.sidecar.capture.iptables import CaptureFailed, CaptureRules, apply
from tests.support import MESHDEV

RULES = CaptureRules(
    proxy_uid=1337,
    outbound_port=15001,
    inbound_port=15006,
    exclude_inbound=(15000, 5432),
    exclude_outbound=(5432,),
)


def test_the_rules_redirect_all_but_the_sidecar_loopback_and_excluded_ports() -> None:
    lines = RULES.restore_input().splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    out = [x for x in lines if x.startswith("-A MESHDEV_OUTPUT")]
    # Order matters: every exception before the final redirect.
    assert out == [
        "-A MESHDEV_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A MESHDEV_OUTPUT -o lo -j RETURN",
        "-A MESHDEV_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A MESHDEV_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A MESHDEV_OUTPUT -j MESHDEV_REDIRECT",
    ]
    inbound = [x for x in lines if x.startswith("-A MESHDEV_INBOUND")]
    assert inbound == [
        "-A MESHDEV_INBOUND -p tcp -m tcp --dport 5432 -j RETURN",
        "-A MESHDEV_INBOUND -p tcp -m tcp --dport 15000 -j RETURN",
        "-A MESHDEV_INBOUND -p tcp -m tcp --dport 15006 -j RETURN",
        "-A MESHDEV_INBOUND -p tcp -j MESHDEV_IN_REDIRECT",
    ]
    assert "-A MESHDEV_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in lines
    assert "-A MESHDEV_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in lines


def test_a_missing_iptables_is_worded() -> None:
    with pytest.raises(CaptureFailed, match="not installed"):
        apply(RULES, command="no-such-iptables-restore")


def needs_root() -> None:
    """Installing rules in a network namespace needs root, unshare and iptables: CI has them
    (scripts/test.sh installs them and CI runs as root), so there it fails rather than skips."""
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("iptables"):
        return
    why = "needs root, unshare and iptables (scripts/test.sh installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def test_capture_init_installs_the_rules_and_the_hosts_file(tmp_path: Path) -> None:
    needs_root()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    # One namespace for both commands: the rules vanish with it.
    script = (
        f"{MESHDEV} capture-init --exclude-inbound-ports=15000,5432 "
        f"--exclude-outbound-ports=5432 --hosts-file={hosts} "
        "--host=backend=198.18.0.9 --host=backend.demo=198.18.0.9 && iptables-save -t nat"
    )
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    saved = done.stdout
    for rule in RULES.restore_input().splitlines():
        if rule.startswith("-A "):
            assert rule in saved, f"{rule!r} not installed:\n{saved}"
    assert "capture: outbound TCP -> :15001" in done.stdout
    assert hosts.read_text().splitlines() == [
        "127.0.0.1\tlocalhost",
        f"198.18.0.9\tbackend backend.demo\t{MARK}",
    ]
    assert hosts.stat().st_uid == 1337
    # The host's own namespace was not touched.
    mine = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True)
    assert "MESHDEV_OUTPUT" not in mine.stdout


def test_capture_init_refuses_a_bad_host_argument() -> None:
    done = subprocess.run(
        [str(MESHDEV), "capture-init", "--host=backend"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "give NAME=ADDRESS" in done.stderr
