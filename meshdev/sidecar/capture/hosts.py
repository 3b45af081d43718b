"""The pod's /etc/hosts naming every service's virtual address.

Docker shares the network-namespace owner's hosts file with every container that joins it, so
the file the sidecar keeps is the one the app reads. Lines meshdev wrote end with a marker and
are replaced as a whole; Docker's own lines (localhost, the pod's name) stay as they are. The
file is a bind mount: it is rewritten in place, never replaced by a rename.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

MARK = "# meshdev service"


def hosts_text(current: str, addresses: Mapping[str, str]) -> str:
    """`current` with its meshdev lines replaced by one line per address (names sorted)."""
    kept = [line for line in current.splitlines() if not line.rstrip().endswith(MARK)]
    by_ip: dict[str, list[str]] = {}
    for name in sorted(addresses):
        by_ip.setdefault(addresses[name], []).append(name)
    ours = [f"{ip}\t{' '.join(names)}\t{MARK}" for ip, names in by_ip.items()]
    return "\n".join(kept + ours) + "\n"


def write_hosts(path: str | Path, addresses: Mapping[str, str]) -> bool:
    """Rewrite `path` in place with `addresses`; False when it already said that. Raises
    OSError when the file cannot be read or written."""
    with open(path, "r+", encoding="utf-8") as f:
        current = f.read()
        wanted = hosts_text(current, addresses)
        if wanted == current:
            return False
        f.seek(0)
        f.write(wanted)
        f.truncate()
    return True
