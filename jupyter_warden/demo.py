"""The embedded demo: its accounts, its group, its notebooks, shares, label and sealed assignment.

``prepare_demo`` is idempotent: run again, it adds only what is missing and
never overwrites a notebook, a password, a grant or a label someone changed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .audit.log import AuditLog
from .identity.accounts import Accounts
from .policy.changes import Policy
from .sealed import KeyRing, seal_notebook
from .store import Store

DEMO_USERS = {
    # name: (password, role, admin)
    "alice": ("alice-instructor", "admin, the instructor", True),
    "bob": ("bob-student", "student in cs101", False),
    "carol": ("carol-student", "student in cs101", False),
}
DEMO_GROUP = "cs101"

# (path, subject, level): one share at each level, so the demo shows them all.
DEMO_GRANTS = [
    ("", "user:alice", "manage"),
    ("welcome.ipynb", "authenticated", "read-run"),
    ("cs101", "group:cs101", "read"),
    ("cs101/assignment-01.ipynb", "group:cs101", "read-run"),
    ("shared", "user:bob", "read-write"),
    ("team/analysis.ipynb", "user:carol", "read-write-run"),
    ("team/secrets.ipynb", "user:carol", "read-write-run"),
]
# A vault secret of carol's, read by team/secrets.ipynb; its value is random per demo.
DEMO_SECRET = ("DEMO_DB_PASSWORD", "user:carol")
DEMO_LABEL = {
    "name": "confidential",
    "banner": "CONFIDENTIAL — do not share",
    "colour": "red",
    "no_links": True,
}
DEMO_LABELLED = "alice"
# The assignment's checking cell is sealed under this key, which the class may use.
DEMO_SEALED = ("cs101/assignment-01.ipynb", "cs101-checks", "group:cs101")

# What each user can try, for the demo's banner.
DEMO_TRIES = {
    "alice": [
        "sees and manages everything (she is the admin)",
        "alice/ carries the CONFIDENTIAL banner and can't be shared by link",
    ],
    "bob": [
        "reads cs101/lecture-01, runs cs101/assignment-01 but can't save it",
        "runs the assignment's sealed check cell and sees its output, never its code",
        "edits shared/ but can't run code there",
        "can't see team/ or alice/",
    ],
    "carol": [
        "reads cs101/, runs the assignment",
        "edits and runs team/analysis.ipynb",
        "runs team/secrets.ipynb: it reads her vault secret DEMO_DB_PASSWORD; the output shows [secret]",
        "can't see shared/ or alice/",
    ],
}


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
                    "# The instructor's check: students run it, and see its output, never this code.\n"
                    "assert mean([1, 2, 3]) == 2, 'mean([1, 2, 3]) should be 2'\n"
                    "assert mean([5]) == 5, 'mean([5]) should be 5'\nprint('all checks passed')",
                    metadata={"tags": ["sealed"]},
                ),
            ]
        ),
        "shared/notes.ipynb": new_notebook(
            cells=[
                new_markdown_cell(
                    "# Shared notes\n\nBob may read and edit this folder (read-write), "
                    "but never run code in it."
                ),
            ]
        ),
        "team/analysis.ipynb": new_notebook(
            cells=[
                new_markdown_cell("# Team analysis\n\nCarol may read, edit and run this notebook."),
                new_code_cell("data = [3, 1, 4, 1, 5, 9, 2, 6]\nsum(data) / len(data)"),
            ]
        ),
        "team/secrets.ipynb": new_notebook(
            cells=[
                new_markdown_cell(
                    "# Reading a secret from the vault\n\n`DEMO_DB_PASSWORD` is Carol's secret "
                    "(`jupyter-warden secrets list`). Her kernel reads it over its own socket; "
                    "wherever the value would show in an output, it is masked. Masking is a "
                    "safety net, not a barrier: see docs/secrets.md."
                ),
                new_code_cell(
                    "from jupyter_warden import secrets\n\n"
                    "password = secrets.get(\"DEMO_DB_PASSWORD\")\n"
                    "print(\"the password is\", password)  # shows [secret]\n"
                    "print(\"it has\", len(password), \"characters\")"
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


def prepare_demo(
    store: Store, root: Path, audit: AuditLog | None = None, actor: str = "demo", master_key=None
) -> dict[str, tuple[str, str]]:
    """Add whatever of the demo is missing; each policy change is audited if ``audit``.

    With the server's ``master_key``, Carol's demo secret is put in the vault
    and the assignment's tagged cell is sealed too.
    """
    def note(action, path=None, grant_id=None, **details):
        if audit is not None:
            audit.record(actor, action, "allow", path=path, grant_id=grant_id, details=details)

    accounts = Accounts(store)
    for name, (password, _role, admin) in DEMO_USERS.items():
        if accounts.get_user(name) is None:
            accounts.add_user(name, password=password, admin=admin)
            note("admin.user", op="add", user=name, admin=admin, password=True)
    if DEMO_GROUP not in accounts.list_groups():
        accounts.add_group(DEMO_GROUP)
        note("admin.group", op="add", group=DEMO_GROUP)
    members = ["bob", "carol"]
    if set(members) - set(accounts.list_groups()[DEMO_GROUP]):
        accounts.change_members(DEMO_GROUP, add=members)
        note("admin.group", op="members", group=DEMO_GROUP, add=members)
    root.mkdir(parents=True, exist_ok=True)
    for relative, notebook in _notebooks().items():
        path = root / relative
        if not path.exists():
            write_notebook_atomically(path, notebook)
    _prepare_policy(Policy(store), note, actor)
    if master_key is not None:
        _prepare_secret(store, master_key, note)
        _prepare_sealed(KeyRing(store, master_key), root, note, actor)
    return {name: (password, role) for name, (password, role, _admin) in DEMO_USERS.items()}


def _prepare_policy(policy: Policy, note, actor: str) -> None:
    label = DEMO_LABEL["name"]
    if label not in {d.name for d in policy.list_labels()}:
        policy.define_label(**DEMO_LABEL)
        note("label.define", label=label)
    if not any(d.name == label and d.path == DEMO_LABELLED for d in policy.labels_on(DEMO_LABELLED)):
        policy.set_label(DEMO_LABELLED, label)
        note("label.set", path=DEMO_LABELLED, label=label)
    for path, subject, level in DEMO_GRANTS:
        if any(g.subject == subject for g in policy.grants_on(path, inherited=False)):
            continue  # someone's own change (or an earlier run) stays as it is
        ref = policy.grant(path, subject, level, by=actor)
        note("grant.create", path=path, grant_id=ref.id, subject=subject, level=level)


def _prepare_secret(store: Store, master_key, note) -> None:
    import secrets

    from .secrets.vault import Vault

    vault = Vault(store, master_key)
    name, owner = DEMO_SECRET
    if name not in {info.name for info in vault.list(None)}:
        vault.set(name, f"demo-{secrets.token_hex(8)}", None, owner)
        note("secret.set", secret=name, owner=owner, op="create")


def _prepare_sealed(ring: KeyRing, root: Path, note, actor: str) -> None:
    path, key, subject = DEMO_SEALED
    if key not in {k.name for k in ring.list_keys()}:
        ring.create(key, by=actor)
        note("key.create", key=key, version=1)
    if not any(s == subject for s, _role in ring.get(key).grants):
        ring.grant(key, subject, by=actor)
        note("key.grant", key=key, subject=subject, role="use")
    notebook = nbformat.read(root / path, as_version=4)
    tagged = [c for c in notebook.cells if "sealed" in (c.metadata.get("tags") or [])]
    if not tagged:
        return  # someone untagged the cell: their choice stays
    report = seal_notebook(notebook, ring, key)
    if report.changed:
        write_notebook_atomically(root / path, notebook)
        note("notebook.seal", path=path, key=key, sealed=report.sealed, resealed=report.resealed)
