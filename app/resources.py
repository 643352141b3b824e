"""Where the page templates and static files are: beside the package in a source checkout
(the layout the project keeps at the top level), inside it once installed from a wheel (the build
copies them in, see setup.py), so ``pip install .`` serves from any directory."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).parent


def resource_dir(name: str) -> Path:
    """``templates``, ``static`` or ``lessons``: the installed copy if there is one, else the checkout's."""
    installed = PACKAGE / name
    return installed if installed.is_dir() else PACKAGE.parent / name
