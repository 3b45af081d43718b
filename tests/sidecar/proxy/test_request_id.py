"""x-request-id as Envoy generates it: a random version-4 UUID, leading zeros kept."""

from __future__ import annotations

import re
import uuid
from unittest import mock

from meshdev.sidecar.proxy import headers
from meshdev.sidecar.proxy.headers import new_request_id

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-a[0-9a-f]{3}-[0-9a-f]{12}$")


def test_a_request_id_is_a_version_4_uuid() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for rid in ids:
        assert _UUID4.match(rid), rid
        assert uuid.UUID(rid).version == 4


def test_small_random_numbers_keep_their_leading_zeros() -> None:
    with mock.patch.object(headers, "getrandbits", return_value=0x1F):
        rid = new_request_id()
    assert rid == "00000000-0000-4000-a000-00000000001f"
