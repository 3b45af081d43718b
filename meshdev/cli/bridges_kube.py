"""The `meshdev export` / `meshdev import` commands of this bridge (see bridges.py)."""

from __future__ import annotations

import click

EXPORT_COMMANDS: list[click.Command] = []
IMPORT_COMMANDS: list[click.Command] = []
