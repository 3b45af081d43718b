"""Where the project's templates/ folder is, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def templates_dir() -> Path:
    # A wheel carries templates/ inside the package (pyproject force-include); a checkout or an
    # editable install reads the top-level folder, so edits there apply without reinstalling.
    checkout = _PACKAGE.parent / "templates"
    if checkout.is_dir():
        return checkout
    return _PACKAGE / "_templates"


def template(name: str) -> Path:
    path = templates_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"template {name!r} not found in {templates_dir()}")
    return path
