"""Proxies named on the command line (`meshdev watch`): `[NAME=]ADMIN_URL` -> targets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from meshdev.telemetry.io.source import ProxyTarget

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class TargetError(ValueError):
    pass


def parse_targets(specs: Iterable[str]) -> list[ProxyTarget]:
    """Each spec as (node name, admin base URL); unnamed ones are named by host:port."""
    targets: list[ProxyTarget] = []
    seen: dict[str, str] = {}
    for spec in specs:
        name, url = _split(spec)
        if name in seen:
            raise TargetError(f"{spec!r}: the name {name!r} is already given to {seen[name]}")
        seen[name] = url
        targets.append((name, url))
    return targets


def _split(spec: str) -> tuple[str, str]:
    name: str | None = None
    url = spec
    head, sep, tail = spec.partition("=")
    if sep and "://" not in head:
        name, url = head, tail
    if "://" not in url:
        url = f"http://{url}"  # 127.0.0.1:9901 means what it would in a browser
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(
            f"{spec!r} is not an admin URL: expected http://HOST:PORT "
            "(e.g. http://127.0.0.1:9901), optionally named: NAME=http://HOST:PORT"
        )
    try:
        port = parts.port
    except ValueError:
        raise TargetError(f"{spec!r}: the port is not a number from 0 to 65535") from None
    if parts.query or parts.fragment:
        raise TargetError(f"{spec!r}: give the admin URL alone, without ?query or #fragment")
    default = f"{parts.hostname}:{port}" if port else parts.hostname
    name = default if name is None else name
    if not _NAME.match(name):
        raise TargetError(
            f"{spec!r}: a name is letters, digits and . _ : - (starting with a letter or digit)"
        )
    return name, url.rstrip("/")
