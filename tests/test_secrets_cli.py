"""`jupyter-warden secrets ...` as separate processes, and the masker on its own."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote, quote_plus

from conftest import database_contents
from test_cli import cli  # noqa: F401  (fixture)

from jupyter_warden.secrets.masking import MASK, Masker, StreamMasker, mask_notebook

VALUE = "cli-s3cret/with spaces+plus"


def test_secrets_from_the_command_line(cli, tmp_path, warden_db_url):  # noqa: F811
    for command in ("set", "grant", "revoke", "list", "remove"):
        assert "usage: jupyter-warden secrets" in cli("secrets", command, "--help").stdout
    cli("user", "add", "ann")
    cli("group", "add", "team")
    set_ = cli("secrets", "set", "DB_PASSWORD", "--owner", "user:ann", stdin=VALUE + "\n")
    assert "secret DB_PASSWORD created, owned by user:ann" in set_.stdout
    assert VALUE not in set_.stdout + set_.stderr
    # Refused with a sentence: empty stdin, no owner for a new secret, a bad name, an unknown subject.
    empty = cli("secrets", "set", "EMPTY", "--owner", "user:ann", stdin="", check=1)
    assert "standard input was empty" in empty.stderr
    assert "needs an owner" in cli("secrets", "set", "NEW", stdin="x-value", check=1).stderr
    assert "is not allowed" in cli("secrets", "set", "9lives", "--owner", "user:ann", stdin="v", check=1).stderr
    assert cli("secrets", "set", "X", "--owner", "ann", stdin="v", check=2).returncode == 2
    assert "no group named 'nope'" in cli("secrets", "grant", "DB_PASSWORD", "--to", "group:nope", check=1).stderr
    cli("secrets", "grant", "DB_PASSWORD", "--to", "group:team")
    listed = cli("secrets", "list").stdout
    assert "DB_PASSWORD" in listed and "group:team" in listed and VALUE not in listed
    replaced = cli("secrets", "set", "DB_PASSWORD", stdin="another-value")
    assert "replaced, owned by user:ann" in replaced.stdout
    cli("secrets", "revoke", "DB_PASSWORD", "--to", "group:team")
    assert "has no grant" in cli("secrets", "revoke", "DB_PASSWORD", "--to", "group:team", check=1).stderr
    cli("secrets", "remove", "DB_PASSWORD")
    assert "no secret 'DB_PASSWORD'" in cli("secrets", "remove", "DB_PASSWORD", check=1).stderr
    export = cli("audit", "export").stdout
    actions = [json.loads(line)["action"] for line in export.splitlines()]
    for action in ("secret.set", "secret.grant", "secret.revoke", "secret.remove"):
        assert action in actions
    assert VALUE not in export and "another-value" not in export
    database = database_contents(warden_db_url)
    assert b"DB_PASSWORD" in database  # the rows were read: the name is stored, its value never
    assert VALUE.encode() not in database and b"another-value" not in database
    assert (tmp_path / "state" / "master.key").stat().st_mode & 0o077 == 0


def test_masker_forms_and_split_streams():
    masker = Masker()
    masker.add(VALUE)
    masker.add("abc")  # too short to mask without masking ordinary text
    data = VALUE.encode()
    for text in (VALUE, quote(VALUE, safe=""), quote_plus(VALUE), data.hex(), data.hex().upper(),
                 base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()):
        assert masker.mask(f"<{text}>") == f"<{MASK}>", text
    for prefix in (b"", b"x", b"xy", b"xyz"):  # inside longer base64, at each alignment
        encoded = base64.b64encode(prefix + data + b"tail").decode()
        masked = masker.mask(encoded)
        assert MASK in masked and base64.b64encode(data).decode()[4:-4] not in masked
    assert masker.mask("abc def") == "abc def"
    assert masker.mask_json({"data": {"text/html": [f"<b>{VALUE}</b>"]}, "n": 1}) == \
        {"data": {"text/html": [f"<b>{MASK}</b>"]}, "n": 1}
    # Split across stream messages: the start is held back until the rest arrives.
    streams = StreamMasker(masker)
    parent = {"msg_id": "m1"}
    first = streams.stream(parent, {"name": "stdout", "text": "pw: " + VALUE[:5]})
    assert first["text"] == "pw: "
    second = streams.stream(parent, {"name": "stdout", "text": VALUE[5:] + "!\n"})
    assert second["text"] == MASK + "!\n"
    # Held text that turns out not to be a value is sent at the next other message.
    streams.stream(parent, {"name": "stdout", "text": "ends with " + VALUE[:3]})
    assert streams.flush() == [(parent, {"name": "stdout", "text": VALUE[:3]})]
    notebook = {"cells": [{"outputs": [{"text": VALUE}]}, {"source": VALUE}]}
    assert mask_notebook(notebook, masker)["cells"][0]["outputs"][0]["text"] == MASK


def test_masking_a_thousand_secrets_is_one_pass():
    masker = Masker()
    for i in range(1000):
        masker.add(f"secret-value-{i:04d}-{'x' * (i % 7)}")
    text = ("ordinary output line, nothing to hide here " * 20 + "\n") * 50  # ~42 kB
    masker.mask(text)  # builds the automaton
    start = time.perf_counter()
    for _ in range(20):
        assert masker.mask(text) == text
    per_pass = (time.perf_counter() - start) / 20
    hit = masker.mask("x secret-value-0999-xxxxx y")  # 999 % 7 == 5
    assert hit == f"x {MASK} y"
    # No timing assertion (the machine is shared); the number is for docs/benchmarks.md.
    print(f"1,000 secrets, 42 kB: {per_pass * 1000:.2f} ms per pass")


def test_the_demo_keeps_one_secret_for_carol(store, tmp_path):
    from jupyter_warden.demo import DEMO_SECRET, prepare_demo
    from jupyter_warden.master_key import MasterKey
    from jupyter_warden.secrets.vault import SecretNotGranted, Vault

    key = MasterKey(b"d" * 32)
    root = tmp_path / "notebooks"
    prepare_demo(store, root, master_key=key)
    vault = Vault(store, key)
    value = vault.read("user:carol", DEMO_SECRET[0])
    prepare_demo(store, root, master_key=key)  # idempotent: the value stays
    assert vault.read("user:carol", DEMO_SECRET[0]) == value
    try:
        vault.read("user:bob", DEMO_SECRET[0])
        raise AssertionError("bob read carol's secret")
    except SecretNotGranted:
        pass
    cell = json.loads((root / "team" / "secrets.ipynb").read_text())["cells"][1]["source"]
    assert 'secrets.get("DEMO_DB_PASSWORD")' in "".join(cell)
