"""Numbers into short cell texts, and sparklines that survive a non-UTF-8 terminal."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.text import Text

_BLOCKS = "▁▂▃▄▅▆▇█"
_ASCII = "_.-=+*#@"


def _utf8_out() -> bool:
    # Python coerces LANG=C to UTF-8 (PEP 538/540), but a terminal started with an explicit
    # legacy encoding must still get glyphs it can show.
    encoding = (getattr(sys.__stdout__, "encoding", None) or "").lower().replace("-", "")
    return encoding in ("utf8", "")


GLYPHS = _BLOCKS if _utf8_out() else _ASCII
DASH = "—" if GLYPHS is _BLOCKS else "-"
ARROW = "←" if GLYPHS is _BLOCKS else "<-"
ARROW_RIGHT = "→" if GLYPHS is _BLOCKS else "->"


def sparkline(
    values: Sequence[float], width: int = 12, glyphs: str = GLYPHS, zero: str = " "
) -> str:
    """The last `width` values as bars scaled to their own maximum; zeros as `zero`."""
    tail = list(values)[-width:]
    if not tail:
        return ""
    top = max(tail)
    if top <= 0:
        return zero * len(tail)
    steps = len(glyphs) - 1
    return "".join(glyphs[min(steps, round(v / top * steps))] if v > 0 else zero for v in tail)


# Two significant digits, as `linkerd viz stat` shows them: enough to read a rate or a
# latency, and a number that does not flicker in its last digit at every refresh (which
# would also make the table re-render the cell for nothing).


def rate(value: float) -> str:
    if value >= 10:
        return f"{value:.0f}"
    if value >= 0.995:
        return f"{value:.1f}"
    if value <= 0:
        return "0"
    return f"{value:.2f}"


def size(value: float) -> str:
    """A byte count (or rate) as `rate` shows numbers, with a decimal unit: 950, 12k, 3.4M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= 0.9995 * scale:
            scaled = value / scale
            return f"{scaled:.1f}{unit}" if scaled < 9.95 else f"{scaled:.0f}{unit}"
    return rate(value)


def ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 1000:
        return f"{value / 1000:.1f}s"
    if value >= 10:
        return f"{value:.0f}ms"
    return f"{value:.1f}ms"


def success(pct: float | None) -> Text:
    """Success rate, coloured the way Linkerd's `viz stat` reads: green, yellow, red."""
    if pct is None:
        return Text(DASH, style="dim")
    style = "green" if pct >= 99.0 else "yellow" if pct >= 95.0 else "bold red"
    return Text(f"{pct:.1f}%", style=style)


def seconds(value: float) -> str:
    if value <= 0:
        return ""
    if value >= 60:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{value:.0f}s"


def right(text: str | Text) -> Text:
    out = text if isinstance(text, Text) else Text(text)
    out.justify = "right"
    return out


def per_step(history: Sequence[float], step: int, width: int) -> list[float]:
    """The newest `width` means of `step` consecutive values (the last one may be partial),
    oldest first: a history kept per interval, drawn per second."""
    if step <= 1:
        return list(history)[-width:]
    values = list(history)
    out: list[float] = []
    end = len(values)
    while end > 0 and len(out) < width:
        chunk = values[max(0, end - step) : end]
        out.append(sum(chunk) / len(chunk))
        end -= step
    out.reverse()
    return out
