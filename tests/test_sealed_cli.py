"""`jupyter-warden keys`, `seal` and `unseal`, end to end, as separate processes."""

from __future__ import annotations

import json
import stat

import nbformat
import pytest

from test_cli import cli  # noqa: F401  (the fixture)
from test_sealed_api import SECRET, make_notebook


@pytest.fixture
def course(cli):  # noqa: F811
    cli("user", "add", "ines")
    cli("user", "add", "sam")
    cli("group", "add", "cs101")
    cli("group", "members", "cs101", "--add", "sam")
    return cli


def audit_actions(cli, n=50):  # noqa: F811
    out = cli("audit", "export").stdout
    return [(r["action"], r["outcome"]) for r in map(json.loads, out.splitlines())][-n:]


def test_keys_create_grant_revoke_rotate_list(course):
    cli = course
    assert "created" in cli("keys", "create", "cs101-checks").stdout
    assert "exists already" in cli("keys", "create", "CS101-checks", check=1).stderr
    assert "not allowed" in cli("keys", "create", "bad name", check=1).stderr
    cli("keys", "grant", "cs101-checks", "--to", "group:cs101")
    cli("keys", "grant", "cs101-checks", "--to", "user:ines", "--role", "manage")
    assert "no user named 'nobody'" in cli("keys", "grant", "cs101-checks", "--to", "user:nobody", check=1).stderr
    assert "no sealing key named 'nope'" in cli("keys", "grant", "nope", "--to", "user:ines", check=1).stderr
    cli("keys", "grant", "cs101-checks", "--to", "link:abc", check=2)
    listed = cli("keys", "list").stdout
    assert "cs101-checks: version 1 of 1" in listed and "group:cs101" in listed and "user:ines (manage)" in listed
    cli("keys", "revoke", "cs101-checks", "--to", "group:cs101")
    assert "no grant" in cli("keys", "revoke", "cs101-checks", "--to", "group:cs101", check=1).stderr
    assert "version 2" in cli("keys", "rotate", "cs101-checks").stdout
    listed = cli("keys", "list").stdout
    assert "version 2 of 2" in listed and "group:cs101" not in listed
    actions = audit_actions(cli)
    for expected in [("key.create", "allow"), ("key.create", "deny"), ("key.grant", "allow"),
                     ("key.grant", "deny"), ("key.revoke", "allow"), ("key.revoke", "deny"),
                     ("key.rotate", "allow")]:
        assert expected in actions, expected
    assert cli("audit", "verify").returncode == 0


def test_seal_and_unseal_a_notebook(course, tmp_path):
    cli = course
    cli("keys", "create", "cs101-checks")
    src, out, back = tmp_path / "a.ipynb", tmp_path / "a-sealed.ipynb", tmp_path / "a-clear.ipynb"
    make_notebook(src)
    result = cli("seal", str(src), "-o", str(out), "--key", "cs101-checks")
    assert "1 cell(s) sealed" in result.stdout
    sealed = nbformat.read(str(out), as_version=4)
    nbformat.validate(sealed)
    assert SECRET not in out.read_text() and SECRET in src.read_text()
    cell = sealed.cells[2]
    assert cell.source.startswith("%%warden_sealed v1 key=cs101-checks version=1 cell=")
    assert cell.outputs[0]["text"] == "all checks passed\n"
    assert sealed.cells[1].source == "answer = 42"  # untagged cells stay as they are
    # Sealing the sealed file again changes nothing; after a rotation it re-seals under version 2.
    assert "1 already sealed" in cli("seal", str(out), "-o", str(tmp_path / "b.ipynb"), "--key", "cs101-checks").stdout
    cli("keys", "rotate", "cs101-checks")
    cli("seal", str(out), "-o", str(tmp_path / "c.ipynb"), "--key", "cs101-checks")
    assert "version=2" in (tmp_path / "c.ipynb").read_text()

    result = cli("unseal", str(tmp_path / "c.ipynb"), "-o", str(back))
    assert "1 cell(s) unsealed" in result.stdout
    clear = nbformat.read(str(back), as_version=4)
    assert clear.cells[2].source == SECRET and "jupyter_warden" not in clear.cells[2].metadata
    assert stat.S_IMODE(back.stat().st_mode) == 0o600
    # The version-1 file still opens after the rotation.
    cli("unseal", str(out), "-o", str(tmp_path / "d.ipynb"))
    assert SECRET in (tmp_path / "d.ipynb").read_text()
    actions = audit_actions(cli)
    assert actions.count(("notebook.seal", "allow")) == 3 and actions.count(("notebook.unseal", "allow")) == 2


def test_seal_refusals(course, tmp_path):
    cli = course
    cli("keys", "create", "k")
    src = tmp_path / "a.ipynb"
    make_notebook(src)
    before = src.read_text()
    assert "overwrite the only copy" in cli("seal", str(src), "-o", str(src), "--key", "k", check=1).stderr
    assert "no cell is tagged 'other'" in cli("seal", str(src), "-o", str(tmp_path / "o.ipynb"), "--key", "k",
                                                "--tag", "other", check=1).stderr
    assert "no sealing key named 'nope'" in cli("seal", str(src), "-o", str(tmp_path / "o.ipynb"), "--key", "nope",
                                                 check=1).stderr
    assert not (tmp_path / "o.ipynb").exists()
    (tmp_path / "junk.ipynb").write_text("not json")
    assert "not a Jupyter notebook" in cli("seal", str(tmp_path / "junk.ipynb"), "-o", str(tmp_path / "o.ipynb"),
                                            "--key", "k", check=1).stderr
    assert "can't read" in cli("seal", str(tmp_path / "none.ipynb"), "-o", str(tmp_path / "o.ipynb"),
                               "--key", "k", check=1).stderr
    cli("seal", str(src), "--key", "k", check=2)  # -o is required
    assert "has no sealed cell" in cli("unseal", str(src), "-o", str(tmp_path / "o.ipynb"), check=1).stderr
    # A sealed cell whose ciphertext was altered: a clear refusal, nothing written.
    cli("seal", str(src), "-o", str(tmp_path / "s.ipynb"), "--key", "k")
    nb = nbformat.read(str(tmp_path / "s.ipynb"), as_version=4)
    lines = nb.cells[2].source.split("\n")
    lines[2] = lines[2][:-4] + ("AAAA" if not lines[2].endswith("AAAA") else "BBBB")
    nb.cells[2].source = "\n".join(lines)
    nbformat.write(nb, str(tmp_path / "t.ipynb"))
    err = cli("unseal", str(tmp_path / "t.ipynb"), "-o", str(tmp_path / "u.ipynb"), check=1).stderr
    assert "does not open" in err and not (tmp_path / "u.ipynb").exists()
    assert src.read_text() == before
    assert ("notebook.seal", "deny") in audit_actions(cli)


def test_markdown_cells_cannot_be_sealed_and_old_notebooks_get_ids(course, tmp_path):
    cli = course
    cli("keys", "create", "k")
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = 4
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["sealed"]})]
    for cell in nb.cells:
        cell.pop("id", None)
    (tmp_path / "old.ipynb").write_text(json.dumps(nb))
    cli("seal", str(tmp_path / "old.ipynb"), "-o", str(tmp_path / "new.ipynb"), "--key", "k")
    sealed = json.loads((tmp_path / "new.ipynb").read_text())
    assert sealed["nbformat_minor"] >= 5 and sealed["cells"][0]["id"]
    assert f"cell={sealed['cells'][0]['id']}" in "".join(sealed["cells"][0]["source"])
    nb.cells.append(nbformat.v4.new_markdown_cell("hidden?", metadata={"tags": ["sealed"]}))
    (tmp_path / "md.ipynb").write_text(json.dumps(nb))
    err = cli("seal", str(tmp_path / "md.ipynb"), "-o", str(tmp_path / "x.ipynb"), "--key", "k", check=1).stderr
    assert "only code cells can be sealed" in err


def test_the_demo_seals_the_assignment_check_once(store, warden_state, tmp_path):
    from jupyter_warden.audit.log import AuditLog, load_or_create_key
    from jupyter_warden.demo import prepare_demo
    from jupyter_warden.master_key import load_master_key
    from jupyter_warden.policy.engine import Actor
    from jupyter_warden.identity.accounts import Accounts
    from jupyter_warden.sealed import KeyRing, parse_placeholder

    audit = AuditLog(store, load_or_create_key(warden_state))
    root, master_key = tmp_path / "notebooks", load_master_key(warden_state)
    prepare_demo(store, root, audit=audit, actor="cli:test", master_key=master_key)
    path = root / "cs101/assignment-01.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    sealed = parse_placeholder(nb.cells[2].source)
    assert sealed.key_name == "cs101-checks" and "assert mean" not in path.read_text()
    ring = KeyRing(store, master_key)
    assert "assert mean([1, 2, 3]) == 2" in ring.open(sealed, nb.cells[2].id)
    bob = Actor.for_account(Accounts(store).get_user("bob"))
    assert ring.may_use(bob, "cs101-checks")
    # Idempotent: a second run changes nothing, records nothing.
    before = (path.read_text(), len(audit.query()))
    prepare_demo(store, root, audit=audit, actor="cli:test", master_key=master_key)
    assert (path.read_text(), len(audit.query())) == before
    assert audit.verify().ok


def test_sealed_commands_have_help(cli):  # noqa: F811
    for command in (["keys"], ["keys", "create"], ["keys", "grant"], ["keys", "revoke"], ["keys", "rotate"],
                    ["keys", "list"], ["seal"], ["unseal"]):
        assert "usage: jupyter-warden" in cli(*command, "--help").stdout
