"""`jupyter-warden secrets ...` as separate processes, and the masker on its own."""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace
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


def test_the_raw_pass_lets_through_only_what_holds_no_value():
    """Messages are judged on their raw bytes first; whatever a parser reads from them, masked."""
    from jupyter_client.session import Session

    from jupyter_warden.enforce.kernel_channels import OutgoingMessage
    from jupyter_warden.secrets.masking import OutputMasking

    value = 'q"uo\\te\tnew-liné ✓'  # a quote, a backslash, a tab, non-ASCII: escaped in JSON
    masker = Masker()
    masker.add(value)
    session = Session(key=b"k")
    sent = []
    connection = SimpleNamespace(session=session, _to_client=lambda channel, msg: sent.append(msg),
                                 _audit=lambda *a, **k: None, _notice=lambda *a, **k: None)
    masking = OutputMasking(SimpleNamespace(masker_for=lambda kernel_id: masker), "k")
    parent = session.msg("execute_request", {"code": ""})["header"]

    def through(msg_type, content=None, raw=None, channel="iopub"):
        msg = session.msg(msg_type, content or {}, parent=parent)
        wire = [b"topic", *session.serialize(msg)]
        if raw is not None:  # another packer's spelling of the same JSON
            wire[6] = raw
            wire[2] = session.sign(wire[3:7])
        idents, fed = session.feed_identities(wire)
        out = masking.zmq(connection, channel, wire, idents, OutgoingMessage(channel, session, parts=fed[1:]))
        return wire, out

    plain = json.dumps(value)[1:-1]  # every character escaped: \u0022, \u00e9 ...
    escaped_every_way = json.dumps({"name": "stdout", "text": f"a {value} b\n"}, ensure_ascii=True)
    for msg_type, content, raw in (
        ("stream", {"name": "stdout", "text": f"pw {value}!\n"}, None),
        ("display_data", {"data": {"text/html": f"<b>{value}</b>"}, "metadata": {}}, None),
        ("display_data", {"data": {value: "as a key"}, "metadata": {}}, None),
        ("stream", None, escaped_every_way.encode()),
        ("execute_result", None, ('{"data": {"text/plain": "' + plain.replace("/", "\\/") + '"}}').encode()),
        ("stream", None, ('{"name": "stdout", "text": "' + "".join(f"\\u{ord(c):04x}" for c in value)
                          + '\\n"}').encode()),
    ):
        wire, out = through(msg_type, content, raw)
        assert out is not wire, (msg_type, raw)
        texts = strings(session.unpack(out[6]))
        assert not [t for t in texts if value in t] and [t for t in texts if MASK in t], texts
        assert out[2] == session.sign(out[3:7])  # signed again
    # Nothing to hide: the very same message goes on, not decoded, not signed again.
    for content in ({"name": "stdout", "text": "12\n"}, {"execution_state": "busy"}):
        wire, out = through("stream" if "name" in content else "status", content)
        assert out is wire
    # A stream ending with a value's start is held back, then joined to its rest.
    _, first = through("stream", {"name": "stdout", "text": "pw " + value[:4]})
    assert session.unpack(first[6])["text"] == "pw "
    _, second = through("stream", {"name": "stdout", "text": value[4:] + "\n"})
    assert session.unpack(second[6])["text"] == MASK + "\n"
    assert not sent


def strings(value) -> list[str]:
    """Every string in decoded JSON, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(s for v in value.values() for s in strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


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
