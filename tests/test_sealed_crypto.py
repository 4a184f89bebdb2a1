"""The cell crypto, the placeholder format and the key ring, against a real store (no server)."""

from __future__ import annotations

import base64

import pytest

from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.master_key import MasterKey
from jupyter_warden.policy.engine import Actor
from jupyter_warden.sealed import (
    KeyRing,
    KeyRingError,
    PlaceholderError,
    UnsealError,
    looks_sealed,
    parse_placeholder,
)
from jupyter_warden.sealed.placeholder import SealedCell, format_placeholder

SECRET = "assert answer == 42, 'SECRET-CHECK-7f3a'"


@pytest.fixture
def ring(store):
    return KeyRing(store, MasterKey(b"\x11" * 32))


def _edit_header(placeholder: str, **changes) -> str:
    first, rest = placeholder.split("\n", 1)
    for name, value in changes.items():
        parts = first.split(" ")
        parts = [f"{name}={value}" if p.startswith(f"{name}=") else p for p in parts]
        first = " ".join(parts)
    return first + "\n" + rest


def test_round_trip(ring):
    ring.create("cs101-checks")
    placeholder = ring.seal("cs101-checks", "cell-1", SECRET)
    assert SECRET not in placeholder and "SECRET-CHECK" not in placeholder
    assert placeholder.startswith("%%warden_sealed v1 key=cs101-checks version=1 cell=cell-1\n")
    assert len(placeholder.splitlines()) == 3
    sealed = parse_placeholder(placeholder)
    assert (sealed.key_name, sealed.key_version, sealed.cell_id) == ("cs101-checks", 1, "cell-1")
    assert ring.open(sealed) == SECRET
    assert ring.open(sealed, "cell-1") == SECRET
    # Two seals of the same source differ (fresh nonce).
    assert ring.seal("cs101-checks", "cell-1", SECRET) != placeholder


def test_ordinary_source_is_not_a_placeholder():
    assert parse_placeholder("print(1)") is None
    assert parse_placeholder("%%time\nprint(1)") is None
    assert not looks_sealed("x = '%%warden_sealed'")


def test_aad_binds_cell_id(ring):
    ring.create("k")
    placeholder = ring.seal("k", "cell-1", SECRET)
    # Run as another cell: refused.
    with pytest.raises(UnsealError, match="sealed for cell 'cell-1'"):
        ring.open(parse_placeholder(placeholder), "cell-2")
    # The header rewritten to name the other cell: the associated data no longer matches.
    moved = _edit_header(placeholder, cell="cell-2")
    with pytest.raises(UnsealError, match="altered or moved"):
        ring.open(parse_placeholder(moved), "cell-2")


def test_aad_binds_key_name_and_version(ring):
    ring.create("a")
    ring.create("b")
    placeholder = ring.seal("a", "c1", SECRET)
    with pytest.raises(UnsealError):
        ring.open(parse_placeholder(_edit_header(placeholder, key="b")))
    # The same blob under key a's material but claiming version 2 (after a rotation).
    ring.rotate("a")
    with pytest.raises(UnsealError):
        ring.open(parse_placeholder(_edit_header(placeholder, version="2")))
    # Built by hand with key a's own material but key b's name in the associated data.
    sealed = parse_placeholder(placeholder)
    relabelled = SealedCell("b", 1, sealed.cell_id, sealed.blob)
    with pytest.raises(UnsealError):
        ring.open(relabelled)


def test_tampering_is_detected(ring):
    ring.create("k")
    placeholder = ring.seal("k", "c1", SECRET)
    first, notice, blob_line = placeholder.split("\n")
    blob = bytearray(base64.urlsafe_b64decode(blob_line[2:] + "=" * (-len(blob_line[2:]) % 4)))
    for index in (0, 13, len(blob) - 1):  # nonce, ciphertext, tag
        changed = bytearray(blob)
        changed[index] ^= 1
        text = base64.urlsafe_b64encode(bytes(changed)).decode().rstrip("=")
        with pytest.raises(UnsealError):
            ring.open(parse_placeholder(f"{first}\n{notice}\n# {text}"))
    # Malformed placeholders are errors, not "ordinary source".
    for bad in [
        placeholder + "\nprint('smuggled')",
        placeholder.replace("v1", "v9"),
        f"{first}\n{notice}\n# not*base64",
        f"{first}\n{notice}\n# AAAA",
        first,
        placeholder.replace("Sealed cell", "Open cell"),
    ]:
        with pytest.raises(PlaceholderError):
            parse_placeholder(bad)


def test_rotation_keeps_old_cells_readable(ring):
    ring.create("k")
    old = ring.seal("k", "c1", SECRET)
    info = ring.rotate("k")
    assert (info.current_version, info.versions) == (2, (1, 2))
    new = ring.seal("k", "c1", SECRET)
    assert parse_placeholder(new).key_version == 2
    assert ring.open(parse_placeholder(old)) == SECRET
    assert ring.open(parse_placeholder(new)) == SECRET
    # A fresh ring (another process) unwraps the versions from the store.
    other = KeyRing(ring.store, MasterKey(b"\x11" * 32))
    assert other.open(parse_placeholder(old)) == SECRET


def test_wrong_master_key_does_not_unwrap(ring):
    ring.create("k")
    placeholder = ring.seal("k", "c1", SECRET)
    other = KeyRing(ring.store, MasterKey(b"\x22" * 32))
    with pytest.raises(KeyRingError, match="can't be unwrapped"):
        other.open(parse_placeholder(placeholder))


def test_unknown_key_and_bad_names(ring):
    with pytest.raises(KeyRingError, match="no sealing key named 'nope'"):
        ring.seal("nope", "c1", SECRET)
    with pytest.raises(KeyRingError, match="not allowed"):
        ring.create("bad name!")
    ring.create("k")
    with pytest.raises(KeyRingError, match="exists already"):
        ring.create("K")
    with pytest.raises(KeyRingError, match="not a cell id"):
        ring.seal("k", "bad id", SECRET)


def test_grants_users_groups_and_revocation(ring, store):
    accounts = Accounts(store)
    for name in ("ann", "bob", "eve"):
        accounts.add_user(name)
    accounts.add_group("cs101")
    accounts.change_members("cs101", add=["bob"])
    ring.create("k")

    def actor(name, groups=(), admin=False):
        from jupyter_warden.names import name_key

        return Actor(name=name, key=name_key(name), groups=frozenset(groups), admin=admin)

    ann, bob, eve = actor("ann"), actor("bob", ["cs101"]), actor("eve")
    assert not ring.may_use(ann, "k") and not ring.may_use(bob, "k")
    ring.grant("k", "user:Ann")
    ring.grant("k", "group:cs101")
    assert ring.may_use(ann, "k") and ring.may_use(bob, "k") and not ring.may_use(eve, "k")
    assert not ring.may_manage(ann, "k")
    assert ring.may_use(actor("root", admin=True), "k")
    assert not ring.may_use(Actor.for_link("abc"), "k")
    assert not ring.may_use(ann, "other") and not ring.may_use(ann, "bad name!")
    ring.revoke("k", "group:cs101")
    assert not ring.may_use(bob, "k")
    with pytest.raises(KeyRingError, match="no grant"):
        ring.revoke("k", "group:cs101")
    with pytest.raises(KeyRingError, match="no user named"):
        ring.grant("k", "user:nobody")
    with pytest.raises(KeyRingError, match="not one of"):
        ring.grant("k", "link:abc")
    ring.grant("k", "user:eve", role="manage")
    assert ring.may_manage(eve, "k") and ring.may_use(eve, "k")
    assert ring.get("k").grants == (("user:ann", "use"), ("user:eve", "manage"))


def test_material_is_stored_wrapped(ring, store):
    from sqlalchemy import select

    from jupyter_warden.store.models import SealingKeyVersion

    ring.create("k")
    placeholder = ring.seal("k", "c1", SECRET)
    with store.transaction() as s:
        wrapped = s.scalar(select(SealingKeyVersion.wrapped))
    material = ring._materials[("k", 1)]
    assert material not in wrapped and len(material) == 32
    assert format_placeholder(parse_placeholder(placeholder)) == placeholder


# -- a placeholder run outside the server fails, and says what it is ---------------


def test_a_placeholder_fails_in_python_and_bash(ring):
    import subprocess

    ring.create("k")
    placeholder = ring.seal("k", "c1", "print('should never run')")
    with pytest.raises(SyntaxError):
        compile(placeholder, "<cell>", "exec")
    done = subprocess.run(["bash", "-c", placeholder], capture_output=True, text=True, timeout=30)
    # bash takes %%... for a job spec: it fails, but without naming the cell (docs/sealed-cells.md).
    assert done.returncode != 0 and done.stderr
    assert "should never run" not in done.stdout


def test_a_placeholder_fails_in_javascript(ring, tmp_path):
    import shutil
    import subprocess

    if shutil.which("node") is None:
        pytest.skip("no node on this machine")
    ring.create("k")
    (tmp_path / "cell.js").write_text(ring.seal("k", "c1", "console.log('should never run')"))
    done = subprocess.run(["node", str(tmp_path / "cell.js")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "SyntaxError" in done.stderr and "%%warden_sealed" in done.stderr


def test_a_placeholder_fails_in_a_stock_ipython_kernel(ring):
    from jupyter_client.manager import start_new_kernel

    from jupyter_warden.sandbox import uninstall_factory

    # A kernel outside any warden server: no sandbox factory left over from an
    # earlier test's server in this process.
    uninstall_factory()
    ring.create("k")
    placeholder = ring.seal("k", "c1", "print('should never run')")
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120)
    try:
        outputs = []
        reply = kc.execute_interactive(placeholder, output_hook=outputs.append, timeout=120)
        assert reply["content"]["status"] == "error"
        text = str([o["content"] for o in outputs] + [reply["content"]])
        assert "Cell magic `%%warden_sealed` not found" in text, text
        assert "should never run" not in "".join(
            o["content"].get("text", "") for o in outputs if o["msg_type"] == "stream"
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_removed_users_key_grants_go_with_them(ring, store):
    from jupyter_warden.names import name_key

    accounts = Accounts(store)
    accounts.add_user("ann")
    ring.create("k")
    ring.grant("k", "user:ann")
    accounts.remove_user("ann")
    accounts.add_user("Ann")  # a new account of the same name inherits nothing
    assert not ring.may_use(Actor(name="Ann", key=name_key("Ann")), "k")
    assert ring.get("k").grants == ()
