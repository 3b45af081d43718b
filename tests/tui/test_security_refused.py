"""The security tab's REFUSED column through real sidecars (real mutual TLS on loopback, their
stats streams, the aggregator): a refusal stays in sight after its interval, as the dashboard's
`p` key needs, since its toast sends the user to look at that tab."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from rich.text import Text

from meshdev.tui.tables.security import pod_security_row
from tests.support import LOCALHOST, wait_until
from tests.telemetry.test_telemetry_security_sidecars import secured_pair


async def test_a_refused_plaintext_connection_stays_in_sight_after_its_interval() -> None:
    # The dashboard's `p` refuses one plaintext connection and says "see 5 Security": the
    # views come four times a second, so one that only counted the interval showed it for a
    # quarter of a second, or not at all by the time the tab was open.
    async with secured_pair() as (_caller, callee, _by_caller, by_callee):
        reader, writer = await asyncio.open_connection(LOCALHOST, callee.listener_port("inbound"))
        writer.write(b"GET /items HTTP/1.1\r\nhost: callee\r\n\r\n")
        await writer.drain()
        with suppress(OSError, asyncio.IncompleteReadError):
            assert await reader.read() == b""
        writer.close()
        await wait_until(lambda: by_callee.refused() == {"no_filter_chain_match": 1}, "refusal")
        seen = len(by_callee.views)
        # Twenty intervals later, none of which refused anything.
        await wait_until(lambda: len(by_callee.views) >= seen + 20, "twenty more views")
        (pod,) = by_callee.views[-1][0].pod_security
        assert pod.tls_failures == {}
        assert pod.tls_failures_total == {"no_filter_chain_match": 1}
        cell = pod_security_row(pod).cells[6]
        assert isinstance(cell, Text)
        assert cell.plain == "plaintext 1"
        assert all("bold" not in str(span.style) for span in cell.spans)  # not just now
