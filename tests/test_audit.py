"""The audit log's chain: appends, tampering of every kind, concurrency."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from jupyter_warden.audit.log import AuditLog, load_or_create_key
from jupyter_warden.store import Store, ensure_state_dir


@pytest.fixture
def log(store, warden_state):
    audit = AuditLog(store, load_or_create_key(warden_state))
    for i in range(6):
        audit.record(f"user{i}", "contents.read", "allow", path=f"n{i}.ipynb", client="127.0.0.1")
    return audit


def sql(store, statement, **params):
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_untouched_chain_verifies(log):
    result = log.verify()
    assert result.ok and result.records == 6


def test_an_edited_record_is_named(log, store):
    sql(store, "UPDATE audit_log SET actor = 'eve' WHERE seq = 3")
    result = log.verify()
    assert not result.ok and result.first_bad == 3 and "changed" in result.message


def test_an_edit_with_a_recomputed_plain_hash_is_still_caught(log, store):
    import hashlib

    sql(store, "UPDATE audit_log SET outcome = 'deny', hash = :h WHERE seq = 2", h=hashlib.sha256(b"x").hexdigest())
    assert log.verify().first_bad == 2


def test_a_deleted_record_is_named(log, store):
    sql(store, "DELETE FROM audit_log WHERE seq = 4")
    result = log.verify()
    assert not result.ok and result.first_bad == 4 and "deleted" in result.message


def test_deleted_records_at_the_end_are_caught(log, store):
    sql(store, "DELETE FROM audit_log WHERE seq >= 5")
    result = log.verify()
    assert not result.ok and result.first_bad == 5


def test_reordered_records_are_caught(log, store):
    sql(store, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
    sql(store, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    sql(store, "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    result = log.verify()
    assert not result.ok and result.first_bad in (2, 3)


def test_a_log_verified_with_another_key_fails(log, store):
    assert not AuditLog(store, b"\0" * 32).verify().ok


def test_concurrent_appends_never_fork_the_chain(store, warden_state):
    key = load_or_create_key(warden_state)
    writers = [AuditLog(Store(store.url), key) for _ in range(4)]

    def write(audit, n):
        for i in range(25):
            audit.record(f"w{n}", "contents.write", "allow", path=f"f{i}")

    threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = AuditLog(store, key).verify()
    assert result.ok and result.records == 100
    for w in writers:
        w.store.dispose()


def test_unknown_actions_are_refused(log):
    with pytest.raises(ValueError, match="unknown audit action"):
        log.record("bob", "contents.peek", "allow")


def test_the_key_file_is_private_and_stable(warden_state):
    ensure_state_dir(warden_state)
    first = load_or_create_key(warden_state)
    assert load_or_create_key(warden_state) == first
    assert (warden_state / "audit.key").stat().st_mode & 0o777 == 0o600


def test_queries_and_exports(log, tmp_path):
    import csv
    import io
    import json

    assert [r.seq for r in log.tail(2)] == [5, 6]
    assert [r.actor for r in log.query(actor="user1")] == ["user1"]
    out = io.StringIO()
    assert log.export(out, "jsonl") == 6
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["actor"] == "user0" and lines[0]["outcome"] == "allow"
    out = io.StringIO()
    log.export(out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 6 and rows[5]["path"] == "n5.ipynb"
