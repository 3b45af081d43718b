"""Telemetry: watch every sidecar's admin API and aggregate it into `MeshView`s.

The dashboard uses `TelemetrySource` (source.py); its tests use `FakeSource` (fake.py). The
types it renders are in view.py. Nothing here imports the terminal UI.

The sources are looked up lazily, so importing the view types does not load the HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshdev.telemetry.io.source import TelemetrySource
    from meshdev.testing.fake_source import FakeSource

__all__ = ["FakeSource", "TelemetrySource"]


def __getattr__(name: str) -> object:
    if name == "TelemetrySource":
        from meshdev.telemetry.io.source import TelemetrySource

        return TelemetrySource
    if name == "FakeSource":
        from meshdev.testing.fake_source import FakeSource

        return FakeSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
