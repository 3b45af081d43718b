"""The private parts of Textual's DataTable the fast table (meshdev/tui/tables/fast.py) relies
on, checked by name, parameters and type.

pyproject.toml pins textual to the minor release the fast table is tested on. When the pin
moves and Textual has renamed, reshaped or dropped one of these, this test names it; without
it, the first sign would be a dashboard that paints stale or misplaced cells."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pytest
from textual import _segment_tools
from textual._two_way_dict import TwoWayDict
from textual.widgets import DataTable
from textual.widgets import _data_table as data_table_module
from textual.widgets.data_table import RowKey

from meshdev.tui.tables import fast
from meshdev.tui.tables.fast import FastDataTable

# DataTable's methods fast.py overrides, with their parameters (after self).
OVERRIDDEN: dict[str, tuple[str, ...]] = {
    "_clear_caches": (),
    "_get_row_style": ("row_index", "base_style"),
    "_render_line": ("y", "x1", "x2", "base_style"),
    "_render_line_in_row": (
        "row_key",
        "line_no",
        "base_style",
        "cursor_location",
        "hover_location",
    ),
    "_get_row_renderables": ("row_index",),
    "_render_cell": ("row_index", "column_index", "base_style", "width", "cursor", "hover"),
}
# DataTable's methods fast.py calls, with the parameters it passes positionally, in order.
CALLED: dict[str, tuple[str, ...]] = {
    "_get_offsets": ("y",),
    "_get_styles_to_render_cell": (
        "is_header_cell",
        "is_row_label_cell",
        "is_fixed_style_cell",
        "hover",
        "cursor",
        "show_cursor",
        "show_hover_cursor",
        "has_css_foreground_priority",
        "has_css_background_priority",
    ),
}
# DataTable's state fast.py reads (and, for the first two, writes), with its type.
STATE: dict[str, type] = {
    "_update_count": int,
    "_data": dict,
    "_header_row_key": RowKey,
    "_row_locations": TwoWayDict,
    "_column_locations": TwoWayDict,
    "_labelled_row_exists": bool,
    "_show_hover_cursor": bool,
    "_row_label_column_width": int,
    # Not fast.py's: its tests clear it, so that every line goes through render_line.
    "_styles_cache": object,
}
# fast.py gives a row its own version by swapping it in as `_update_count` around these calls:
# that works only while DataTable keys their caches on `_update_count`.
KEYED_ON_UPDATE_COUNT = ("_render_line_in_row", "_get_row_renderables", "_render_cell")
# fast.py's own state: a DataTable attribute of the same name would be silently overwritten.
OWN_STATE = frozenset(
    {
        "_cell_versions",
        "_row_versions",
        "_layout_version",
        "_contents",
        "_lines",
        "_styled",
        "_strips",
        "_metas",
        "_frame_styles",
        "_frame_width",
        "_painted_layout",
        "fast_rows",
        "lines_rendered",
    }
)


def _parameters(method: Callable[..., Any]) -> tuple[str, ...]:
    # Follows functools wrappers (DataTable caches _get_styles_to_render_cell).
    names = tuple(inspect.signature(method).parameters)
    return names[1:] if names[:1] == ("self",) else names


def private_api_problems(table_class: type[DataTable[Any]]) -> list[str]:
    """What `table_class` (DataTable, or a stand-in in tests) lacks of what fast.py uses."""
    problems = []
    for name, expected in {**OVERRIDDEN, **CALLED}.items():
        method = getattr(table_class, name, None)
        if not callable(method):
            problems.append(f"DataTable.{name}() is gone")
        elif (found := _parameters(method)) != expected:
            problems.append(
                f"DataTable.{name}() takes ({', '.join(found)}); "
                f"fast.py expects ({', '.join(expected)})"
            )
    table = table_class()
    for name, kind in STATE.items():
        if not hasattr(table, name):
            problems.append(f"DataTable().{name} is gone")
        elif not isinstance(value := getattr(table, name), kind):
            problems.append(
                f"DataTable().{name} is {type(value).__name__}, not the {kind.__name__} "
                "fast.py expects"
            )
    for name in KEYED_ON_UPDATE_COUNT:
        method = getattr(table_class, name, None)
        if callable(method) and "self._update_count" not in inspect.getsource(method):
            problems.append(
                f"DataTable.{name}() no longer reads self._update_count: fast.py's per-row "
                "versions (swapped in as _update_count around it) would not reach its cache"
            )
    for name in OWN_STATE | _own_methods():
        if hasattr(table_class, name) or hasattr(table, name):
            problems.append(f"DataTable now has {name} of its own: fast.py's {name} shadows it")
    return problems


def _own_methods() -> set[str]:
    """The private methods fast.py defines that are not DataTable overrides."""
    return {
        name
        for name, value in vars(FastDataTable).items()
        if name.startswith("_")
        and not name.startswith("__")
        and inspect.isfunction(value)
        and value.__module__ == fast.__name__
        and name not in OVERRIDDEN
    }


def _fail(problems: list[str]) -> None:
    if problems:
        pytest.fail(
            f"Textual {version('textual')} changed what meshdev/tui/tables/fast.py relies on "
            "(the textual pin in pyproject.toml says which release it was tested on):\n  "
            + "\n  ".join(problems),
            pytrace=False,
        )


def test_datatable_still_has_every_private_part_the_fast_table_uses() -> None:
    _fail(private_api_problems(DataTable))


def test_the_private_helpers_the_fast_table_imports_are_there() -> None:
    problems = []
    line_crop = getattr(_segment_tools, "line_crop", None)
    if not callable(line_crop):
        problems.append("textual._segment_tools.line_crop() is gone")
    elif (found := _parameters(line_crop)) != ("segments", "start", "end", "total"):
        problems.append(
            f"textual._segment_tools.line_crop() takes ({', '.join(found)}); "
            "fast.py expects (segments, start, end, total)"
        )
    renderables = getattr(data_table_module, "RowRenderables", None)
    if getattr(renderables, "_fields", None) != ("label", "cells"):
        problems.append(
            "textual.widgets._data_table.RowRenderables is no longer a (label, cells) tuple"
        )
    for method in ("get", "get_key"):
        if not callable(getattr(TwoWayDict, method, None)):
            problems.append(f"textual._two_way_dict.TwoWayDict.{method}() is gone")
    _fail(problems)


def test_every_override_and_attribute_of_the_fast_table_is_listed_here() -> None:
    # Listed, so that the tests above check a new one against Textual too.
    overrides = {
        name
        for name, value in vars(FastDataTable).items()
        if inspect.isfunction(value)
        and name.startswith("_")
        and not name.startswith("__")
        and hasattr(DataTable, name)
    }
    assert overrides == set(OVERRIDDEN), "fast.py's overrides of DataTable are OVERRIDDEN's keys"
    for name, expected in OVERRIDDEN.items():
        found = _parameters(getattr(FastDataTable, name))
        assert found == expected, (
            f"FastDataTable.{name}() takes {found}, OVERRIDDEN says {expected}"
        )
    like = DataTable[str](cursor_type="row", zebra_stripes=True, cell_padding=1)
    own = set(vars(FastDataTable())) - set(vars(like))
    assert own <= OWN_STATE, f"fast.py sets {sorted(own - OWN_STATE)}: add to OWN_STATE"


class _Changed(DataTable[str]):
    """A DataTable as a later Textual might have it: one method reshaped, one gone, one
    attribute of another type, and a name fast.py uses for itself taken."""

    _get_offsets = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self._update_count = "0"  # type: ignore[assignment]
        self._lines: list[str] = []

    def _render_cell(  # type: ignore[override]
        self, row_index: int, column_index: int, style: Any, width: int
    ) -> Any:
        return None


def test_a_change_is_named_not_just_noticed() -> None:
    problems = "\n".join(private_api_problems(_Changed))
    assert "DataTable._render_cell() takes (row_index, column_index, style, width)" in problems
    assert "DataTable._render_cell() no longer reads self._update_count" in problems
    assert "DataTable._get_offsets() is gone" in problems
    assert "DataTable()._update_count is str, not the int fast.py expects" in problems
    assert "DataTable now has _lines of its own" in problems
