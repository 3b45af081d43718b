"""The HTTP/2 framing layer both ends share: the sans-IO ``h2`` connection, configured and
hardened as Envoy's codec is (source/common/http/http2/codec_impl.cc over nghttp2).

``h2`` treats a peer that opens more streams than SETTINGS_MAX_CONCURRENT_STREAMS allows as a
connection error; nghttp2 (so Envoy) refuses just that stream with RST_STREAM REFUSED_STREAM and
the connection goes on. ``Codec`` does the latter, and records the refusal as a ``StreamRefused``
event so the connection can count it.
"""

from __future__ import annotations

from typing import Final

from h2.config import H2Configuration
from h2.connection import H2Connection, _decode_headers
from h2.errors import ErrorCodes
from h2.events import Event
from h2.settings import SettingCodes, Settings
from h2.stream import StreamClosedBy
from hyperframe.frame import Frame, HeadersFrame, RstStreamFrame

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Envoy's default max_concurrent_streams is 2^31-1; Istio and most gateways advertise 100, and
# so does the brief's hardening target (nghttp2's own default).
MAX_CONCURRENT_STREAMS: Final = 100
# The window each stream may fill before the reader consumes: what a body buffers at most.
STREAM_WINDOW: Final = 256 * 1024
# The connection's window: a few streams' worth (RFC 9113's default is 65,535).
CONNECTION_WINDOW: Final = 1024 * 1024
# Envoy's max_outbound_control_frames: ACKs (PING, SETTINGS) and RST_STREAMs queued unsent.
MAX_OUTBOUND_CONTROL_FRAMES: Final = 1000
# Envoy's overload.premature_reset_total_stream_count and its 1 s minimum stream lifetime:
# a stream reset by the client sooner, before its answer ended, was reset "prematurely".
PREMATURE_RESET_TOTAL: Final = 500
PREMATURE_RESET_LIFETIME: Final = 1.0


class StreamRefused(Event):
    """A stream over SETTINGS_MAX_CONCURRENT_STREAMS was refused (RST_STREAM REFUSED_STREAM)."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class Codec(H2Connection):
    """``h2``'s connection, refusing a stream over the concurrency limit instead of failing
    the connection (see the module doc)."""

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[Event]]:
        sid = frame.stream_id
        if (
            sid not in self.streams
            and not self.config.client_side
            and sid > self.highest_inbound_stream_id
            and self.open_inbound_streams >= self.local_settings.max_concurrent_streams
        ):
            # Decoded all the same: the HPACK table is shared by every stream.
            _decode_headers(self.decoder, frame.data)
            self.highest_inbound_stream_id = sid
            # What the peer sends on it next (its body) is answered with a RST_STREAM, not
            # taken as a connection error.
            self._closed_streams[sid] = StreamClosedBy.SEND_RST_STREAM
            rst = RstStreamFrame(sid)
            rst.error_code = ErrorCodes.REFUSED_STREAM
            return [rst], [StreamRefused(sid)]
        return super()._receive_headers_frame(frame)


def server_codec(max_header_list_size: int) -> Codec:
    """A server side codec with meshdev's settings, its preamble (SETTINGS, the connection
    window) queued to send."""
    codec = Codec(_config(client_side=False))
    codec.local_settings = _settings(False, max_header_list_size)
    codec.initiate_connection()
    codec.increment_flow_control_window(CONNECTION_WINDOW - 65535)
    # Applies at once, not only once the peer acknowledges our SETTINGS: the limit holds from
    # the first request.
    codec.decoder.max_header_list_size = max_header_list_size
    return codec


def client_codec() -> Codec:
    """A client side codec (upstream h2c), its preamble queued to send."""
    codec = Codec(_config(client_side=True))
    codec.local_settings = _settings(True, 64 * 1024)
    codec.initiate_connection()
    codec.increment_flow_control_window(CONNECTION_WINDOW - 65535)
    return codec


def _config(*, client_side: bool) -> H2Configuration:
    """What the peer sends is validated (pseudo-headers, connection-specific fields, illegal
    characters); what we send is not checked again: its names come lower-cased from our own
    parsers and its values stripped by them, and h2's outbound checks and normalisation cost
    about a fifth of a proxied stream's CPU."""
    return H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


def _settings(client: bool, max_header_list_size: int) -> Settings:
    """Our SETTINGS, as the initial local settings (sent by initiate_connection)."""
    values = {
        SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
    }
    if client:
        values[SettingCodes.ENABLE_PUSH] = 0
    return Settings(client=client, initial_values=values)
