"""The embedded demo: its accounts, its group and its notebooks.

``prepare_demo`` is idempotent: run again, it adds only what is missing and
never overwrites a notebook or a password someone changed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .identity.accounts import Accounts
from .store import Store

DEMO_USERS = {
    # name: (password, role, admin)
    "alice": ("alice-instructor", "admin, the instructor", True),
    "bob": ("bob-student", "student in cs101", False),
    "carol": ("carol-student", "student in cs101", False),
}
DEMO_GROUP = "cs101"


def _notebooks() -> dict[str, nbformat.NotebookNode]:
    return {
        "welcome.ipynb": new_notebook(
            cells=[
                new_markdown_cell(
                    "# Welcome to the jupyter-warden demo\n\n"
                    "You are signed in as one of the demo users. Sign out from "
                    "*File → Log Out* and sign in as another to see the server "
                    "from their side. The README lists what to try."
                ),
                new_code_cell("import getpass\nprint('this kernel runs for', getpass.getuser())"),
            ]
        ),
        "cs101/lecture-01.ipynb": new_notebook(
            cells=[
                new_markdown_cell("# CS101, lecture 1: lists\n\nThe class roster may read this."),
                new_code_cell("squares = [n * n for n in range(10)]\nsquares"),
            ]
        ),
        "cs101/assignment-01.ipynb": new_notebook(
            cells=[
                new_markdown_cell(
                    "# Assignment 1\n\nWrite `mean(xs)` returning the arithmetic mean of a "
                    "non-empty list, then run the check cell."
                ),
                new_code_cell("def mean(xs):\n    ...\n"),
                new_code_cell(
                    "# check: sealed for students once sealed cells land\n"
                    "assert mean([1, 2, 3]) == 2\nassert mean([5]) == 5\nprint('all checks passed')",
                    metadata={"tags": ["sealed"]},
                ),
            ]
        ),
        "alice/private-notes.ipynb": new_notebook(
            cells=[new_markdown_cell("# Alice's private notes\n\nOnly Alice should ever read this.")]
        ),
    }


def write_notebook_atomically(path: Path, notebook: nbformat.NotebookNode) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".~", suffix=".ipynb")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(notebook, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def prepare_demo(store: Store, root: Path) -> dict[str, tuple[str, str]]:
    accounts = Accounts(store)
    for name, (password, _role, admin) in DEMO_USERS.items():
        if accounts.get_user(name) is None:
            accounts.add_user(name, password=password, admin=admin)
    if DEMO_GROUP not in accounts.list_groups():
        accounts.add_group(DEMO_GROUP)
    accounts.change_members(DEMO_GROUP, add=["bob", "carol"])
    root.mkdir(parents=True, exist_ok=True)
    for relative, notebook in _notebooks().items():
        path = root / relative
        if not path.exists():
            write_notebook_atomically(path, notebook)
    return {name: (password, role) for name, (password, role, _admin) in DEMO_USERS.items()}
