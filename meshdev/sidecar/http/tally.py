"""What a served connection counts, as the engine sees it: tallies it bumps, nothing named.

The names are the listener's and its connection manager's, Envoy's (``sidecar.stats.sets.
DownstreamStatSet`` implements ``ConnTally``); the engine imports none of them. A server is
given a factory (``HttpServer.tallies``) asked once per accepted connection, so the stats a
connection counts in follow the listener's name across config swaps; a server without one
(the admin API's) counts into ``UNCOUNTED``. Bytes are counted as the connection reads and
writes them (plaintext, above TLS, as Envoy's connection stats are): one int addition each.

This module sits at the bottom of the engine: it imports nothing of meshdev.
"""

from __future__ import annotations

from typing import Protocol


class Tally(Protocol):
    """A number a connection bumps (``.value += n``): a stats store's counter or gauge."""

    value: int


class ConnTally(Protocol):
    """A served connection's stats (see the module doc)."""

    # Bytes read from the client, and written to it.
    @property
    def rx_bytes(self) -> Tally: ...
    @property
    def tx_bytes(self) -> Tally: ...
    # Closed by the keep-alive idle timeout; refused as malformed (the codec's protocol
    # error); a request head not received within the header timeout; closed by a drain.
    @property
    def idle_timeout(self) -> Tally: ...
    @property
    def protocol_error(self) -> Tally: ...
    @property
    def header_timeout(self) -> Tally: ...
    @property
    def drain_close(self) -> Tally: ...
    # Requests reset by the client (it left, or reset the stream) and by us (an answer cut
    # off: its upstream failed mid-body).
    @property
    def rq_rx_reset(self) -> Tally: ...
    @property
    def rq_tx_reset(self) -> Tally: ...

    def opened(self) -> None:
        """A connection was accepted (or handed over) to the listener."""

    def http1(self) -> None:
        """The connection speaks HTTP/1.1 (HTTP/2 connections count their own)."""

    def closed(self, *, local: bool, active_rq: bool, http1: bool) -> None:
        """The connection closed: by us (`local`) or the client, with a request in flight
        (`active_rq`) or not; `http1` if `http1()` was told."""


class _Number:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _Uncounted:
    """Tallies that go nowhere: a server whose connections are no listener's."""

    __slots__ = (
        "drain_close",
        "header_timeout",
        "idle_timeout",
        "protocol_error",
        "rq_rx_reset",
        "rq_tx_reset",
        "rx_bytes",
        "tx_bytes",
    )

    def __init__(self) -> None:
        self.rx_bytes = _Number()
        self.tx_bytes = _Number()
        self.idle_timeout = _Number()
        self.protocol_error = _Number()
        self.header_timeout = _Number()
        self.drain_close = _Number()
        self.rq_rx_reset = _Number()
        self.rq_tx_reset = _Number()

    def opened(self) -> None:
        return

    def http1(self) -> None:
        return

    def closed(self, *, local: bool, active_rq: bool, http1: bool) -> None:
        return


UNCOUNTED: ConnTally = _Uncounted()
