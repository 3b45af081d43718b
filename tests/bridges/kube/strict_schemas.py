"""The real schemas, offline and strict: Kubernetes' (kubernetes-validate's strict ones, for
the newest Kubernetes it ships) and Istio's (its CRDs' OpenAPI schemas in
tests/fixtures/istio/istio-crds.gen.yaml), made strict as the API server's structural
pruning and Istio's own validation are: no field a schema does not list, durations as Istio
takes them (Go's syntax, whole milliseconds, at least 1 ms), ports in range."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

CRDS = Path(__file__).resolve().parents[2] / "fixtures" / "istio" / "istio-crds.gen.yaml"
KUBERNETES = kv_utils.latest_version()

_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 10**6, "s": 10**9}
_NANOS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_RULE = "duration(self) >= duration('1ms')"
_PORT_RULE = "0 < self && self <= 65535"

formats = jsonschema.FormatChecker()


def _nanos(text: str) -> int | None:
    if not _GO_DURATION.match(text):
        return None
    total = 0.0
    for number, unit in _PART.findall(text):
        total += float(number) * _NANOS[unit]
    return round(total)


@formats.checks("istio-duration", raises=ValueError)
def _duration(value: object) -> bool:
    """Istio's ValidateDuration: >= 1ms, to the millisecond."""
    if not isinstance(value, str):
        return True
    nanos = _nanos(value)
    if nanos is None:
        raise ValueError(f"{value!r} is not a Go duration")
    if nanos < 10**6:
        raise ValueError(f"{value!r} is under 1ms")
    if nanos % 10**6:
        raise ValueError(f"{value!r} is finer than a millisecond")
    return True


@formats.checks("istio-duration-or-zero", raises=ValueError)
def _duration_or_zero(value: object) -> bool:
    # connectionPool.tcp.idleTimeout: 0s turns it off (Istio skips its check for 0).
    if isinstance(value, str) and _nanos(value) == 0:
        return True
    return _duration(value)


def _strict(node: Any, name: str = "") -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v, k) if k != "properties" else v for k, v in node.items()}
    if "properties" in node:
        out["properties"] = {k: _strict(v, k) for k, v in node["properties"].items()}
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    rules = [r.get("rule") for r in node.get("x-kubernetes-validations", [])]
    if _DURATION_RULE in rules:
        out["format"] = "istio-duration"
    elif name == "idleTimeout" and node.get("type") == "string":
        out["format"] = "istio-duration-or-zero"
    if _PORT_RULE in rules:
        out["minimum"], out["maximum"] = 1, 65535
    return out


@functools.cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    docs = yaml.load_all(CRDS.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in docs:
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # The object's envelope, which the API server checks itself.
            schema["properties"]["apiVersion"] = {"type": "string"}
            schema["properties"]["kind"] = {"type": "string"}
            schema["properties"]["metadata"] = {"type": "object"}
            schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
            out[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return out


@functools.cache
def _istio_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_crds()[(api_version, kind)], format_checker=formats)


@functools.cache
def _kubernetes_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    # kubernetes_validate.validate, with its schema loaded once rather than per object.
    folder = f"kubernetes-json-schema/v{KUBERNETES}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv_utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", KUBERNETES)
    definitions = kv_utils.schema_contents(f"{folder}/_definitions.json", KUBERNETES)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def is_istio(doc: dict[str, Any]) -> bool:
    return ".istio.io/" in str(doc.get("apiVersion"))


def errors(doc: dict[str, Any]) -> list[str]:
    """Every way `doc` fails its real schema (an empty list: it passes)."""
    if is_istio(doc):
        validator: jsonschema.protocols.Validator = _istio_validator(doc["apiVersion"], doc["kind"])
    else:
        validator = _kubernetes_validator(doc["apiVersion"], doc["kind"])
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    # A format's error says why in its cause (say, "finer than a millisecond").
    return [
        f"{where} {'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        + (f" ({e.cause})" if e.cause is not None else "")
        for e in validator.iter_errors(doc)
    ]


def validate_kubernetes(doc: dict[str, Any]) -> None:
    """kubernetes-validate's own entry point, strict, for the newest Kubernetes it ships."""
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def all_documents(documents: dict[str, list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    for docs in documents.values():
        yield from docs


def local_rate_limit_errors(config: dict[str, Any]) -> list[str]:
    """An EnvoyFilter's local rate limit config (direct, or a TypedStruct's value) read as
    Envoy's own LocalRateLimit message (xds-protos: no unknown field) and checked with
    protoc-gen-validate's rules, as Envoy checks it when the patch is applied."""
    import warnings

    from envoy.extensions.filters.http.local_ratelimit.v3 import (  # type: ignore[import-untyped]
        local_rate_limit_pb2,
    )
    from google.protobuf import json_format
    from protoc_gen_validate.validator import (  # type: ignore[import-untyped]
        ValidationFailed,
        validate_all,
    )

    body = dict(config)
    type_url = body.pop("@type", None)
    if type_url == "type.googleapis.com/udpa.type.v1.TypedStruct":
        type_url, body = body.pop("type_url"), dict(body.pop("value"))
    expected = "type.googleapis.com/" + local_rate_limit_pb2.LocalRateLimit.DESCRIPTOR.full_name
    if type_url != expected:
        return [f"type {type_url}, not {expected}"]
    try:
        message = json_format.ParseDict(body, local_rate_limit_pb2.LocalRateLimit())
        with warnings.catch_warnings():
            # protoc-gen-validate reads FieldDescriptor.label, which protobuf 6 deprecates.
            warnings.filterwarnings("ignore", "label\\(\\) is deprecated", DeprecationWarning)
            validate_all(message)
    except (json_format.ParseError, ValidationFailed) as exc:
        return [str(exc)]
    return []
