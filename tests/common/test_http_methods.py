"""The methods mesh.yaml takes are exactly those a sidecar can be asked: its HTTP/1.1 parser
(httptools' llhttp) takes each of them and refuses the ones validation refuses."""

from __future__ import annotations

import httptools
import pytest

from meshdev.common.http_methods import KNOWN_METHODS, method_problem


class _Callbacks:
    def on_url(self, url: bytes) -> None:
        pass


def parses(method: str) -> bool:
    target = b"backend:80" if method == "CONNECT" else b"/"
    parser = httptools.HttpRequestParser(_Callbacks())
    try:
        parser.feed_data(method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    except httptools.HttpParserUpgrade:
        return method == "CONNECT"  # parsed; the tunnel starts after the head
    except httptools.HttpParserError:
        return False
    return True


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
def test_every_method_taken_reaches_the_router(method: str) -> None:
    assert method_problem(method) is None
    assert parses(method)


@pytest.mark.parametrize("method", ["FETCH", "get", "Get", "GETT", "UPDATE", "BREW", "*"])
def test_every_method_refused_would_be_answered_400(method: str) -> None:
    assert method_problem(method) is not None
    assert not parses(method)


def test_a_typo_is_matched_to_the_likeliest_method() -> None:
    assert "(did you mean 'PATCH'?)" in (method_problem("FETCH") or "")
    assert "(did you mean 'PROPFIND'?)" in (method_problem("PROPFINF") or "")
    assert "did you mean" not in (method_problem("BREW") or "")
    assert method_problem("get") == "'get' is not an HTTP method; methods are upper case, like GET"
