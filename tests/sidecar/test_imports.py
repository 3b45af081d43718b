"""The sidecar process stays small: what `meshdev sidecar` imports (issue 3, <= 50 MB RSS)."""

from __future__ import annotations

import json
import subprocess
import sys

# Client/server frameworks the data plane has no use for; aiohttp alone cost ~20 MB of RSS.
HEAVY = ("aiohttp", "yarl", "multidict", "aiohappyeyeballs", "aiosignal", "frozenlist", "attr")

PROBE = (
    "import json, sys; import meshdev.sidecar.main; "
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
)


def test_the_sidecar_imports_no_web_framework() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "meshdev" in loaded and "httptools" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded.intersection(HEAVY))
