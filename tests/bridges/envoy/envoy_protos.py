"""Envoy's own protos (xds-protos) and protoc-gen-validate's rules, for the bootstraps we write.

`parse` reads a bootstrap as envoy.config.bootstrap.v3.Bootstrap with protobuf's JSON mapping,
refusing unknown fields; every typed_config's Any must name a message that is loaded, so the
extension modules a bootstrap may use are imported here (an Any whose type is not loaded
fails to parse, which is the point).

`violations` applies protoc-gen-validate's rules. Its Python runtime
(protoc_gen_validate.validator.validate_all) generates a validating function per message type
from the `validate.rules` options on its fields and runs it, collecting every violation. It
handles Envoy's messages, with one gap: a google.protobuf.Any is checked against the Any's own
rules (required, the type URL) but the message packed inside is never unpacked, so a
typed_config's own rules would go unchecked. `violations` therefore unpacks every Any it
finds (in any field, map or list, at any depth) and validates the packed message too.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2  # type: ignore[import-untyped]
from google.protobuf import any_pb2, json_format, symbol_database
from google.protobuf.message import Message
from protoc_gen_validate.validator import (  # type: ignore[import-untyped]
    ValidationFailed,
    validate_all,
)

# Loaded for their registration in the default descriptor pool: each is a typed_config type
# or a message our bootstraps nest.
EXTENSIONS = (
    "envoy.config.trace.v3.opentelemetry_pb2",
    "envoy.config.trace.v3.zipkin_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
)
for _module in EXTENSIONS:
    importlib.import_module(_module)

Bootstrap = bootstrap_pb2.Bootstrap


def parse(doc: dict[str, Any]) -> Any:
    """The Bootstrap message (Envoy's generated classes have no type stubs, hence Any)."""
    message = Bootstrap()
    json_format.ParseDict(doc, message, ignore_unknown_fields=False)
    return message


def unpack(value: any_pb2.Any) -> Any:
    name = value.TypeName()
    message = symbol_database.Default().GetSymbol(name)()
    assert value.Unpack(message), name
    return message


def _anys(message: Message) -> list[any_pb2.Any]:
    found: list[any_pb2.Any] = []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values())
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, any_pb2.Any):
                found.append(item)
            else:
                found += _anys(item)
    return found


def violations(message: Message) -> list[str]:
    """protoc-gen-validate's violations of `message` and of every message packed in it."""
    out: list[str] = []
    pending = [(message.DESCRIPTOR.full_name, message)]
    while pending:
        where, current = pending.pop()
        try:
            with warnings.catch_warnings():
                # protoc-gen-validate 1.3 reads FieldDescriptor.label, which protobuf 6
                # deprecates (still answering it): harmless, and not ours to fix.
                warnings.filterwarnings("ignore", "label\\(\\) is deprecated", DeprecationWarning)
                validate_all(current)
        except ValidationFailed as exc:
            out += [f"{where}: {line}" for line in str(exc).splitlines()]
        for packed in _anys(current):
            inner = unpack(packed)
            pending.append((inner.DESCRIPTOR.full_name, inner))
    return out


def typed_configs(message: Message) -> list[Message]:
    """Every message packed in an Any anywhere in `message`, unpacked."""
    out: list[Message] = []
    pending = [message]
    while pending:
        current = pending.pop()
        for packed in _anys(current):
            inner = unpack(packed)
            out.append(inner)
            pending.append(inner)
    return out
