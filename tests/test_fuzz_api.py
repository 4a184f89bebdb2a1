"""schemathesis against /api/warden/openapi.json, signed in as a user of each level.

Properties, for every generated request: never a 5xx; never a success the
caller's capabilities don't allow; and, after the run, the audit chain
verifies and every allowed policy change lies where its actor may manage.
"""

from __future__ import annotations

import os

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase

from jupyter_warden.audit.log import AuditLog, load_or_create_key
from jupyter_warden.policy.paths import BadPath, normalize_path
from jupyter_warden.store import Store
from conftest import fresh_database
from server_process import ServerProcess

# Generated requests per operation and user; 24 operations x 7 users.
EXAMPLES = int(os.environ.get("WARDEN_FUZZ_EXAMPLES", "40"))
LEVELS = ["read", "read-run", "read-write", "read-write-run", "manage"]
USERS = ["stranger", *LEVELS, "admin"]
POLICY_CHANGES = {"grant.create", "grant.revoke", "link.create", "link.revoke",
                  "label.define", "label.set", "label.remove"}
MANAGE_ONLY_READS = {"/api/warden/grants", "/api/warden/links"}  # and audit; path-labels needs only read


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    root = tmp / "root"
    (root / "course").mkdir(parents=True)
    (root / "course" / "lecture.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (root / "private").mkdir()
    (root / "private" / "answers.txt").write_text("the answers")
    with fresh_database(tmp) as db_url:
        server = ServerProcess(tmp, db_url, root)
        server.add_admin("admin")
        tokens = {"admin": server.token}
        for who in USERS[:-1]:
            name = who.replace("-", "")
            server.cli("user", "add", name, "--password-stdin", stdin="long-enough-password\n")
            tokens[who] = server.cli("user", "token", name).stdout.split()[0]
            if who in LEVELS:
                server.cli("grant", "course", "--to", f"user:{name}", "--level", who)
        server.tokens = tokens
        try:
            server.start()
            yield server
        finally:
            server.stop()


# Real paths and subjects: a second pass draws ``path`` and ``subject`` from
# these only, so that it reaches the policy and not only the input checks.
KNOWN = {
    "path": ["course", "course/lecture.ipynb", "private", "private/answers.txt", "", "course/../private"],
    "subject": ["authenticated", "user:stranger", "user:read", "user:manage", "group:nobody"],
}


def _with_known_values(document):
    """The OpenAPI document, with each ``path``/``subject`` parameter or property taking only KNOWN values."""

    def widen(schema: dict, name: str) -> dict:
        return {"type": "string", "enum": KNOWN[name]}

    def walk(node):
        if isinstance(node, dict):
            if node.get("in") in ("query", "path") and node.get("name") in KNOWN and "schema" in node:
                node["schema"] = widen(node["schema"], node["name"])
            for name, schema in (node.get("properties") or {}).items():
                if name in KNOWN and isinstance(schema, dict):
                    node["properties"][name] = widen(schema, name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return document


def _paths_of(case) -> list[str]:
    """The policy paths a request names, in its query or body."""
    found = []
    for source in (case.query or {}, case.body if isinstance(case.body, dict) else {}):
        value = source.get("path")
        if isinstance(value, str):
            found.append(value)
    return found


def _under_course(path: str) -> bool:
    try:
        p = normalize_path(path)
    except BadPath:
        return False
    return p == "course" or p.startswith("course/")


def _check(who: str, case, response) -> None:
    op = f"{case.method} {case.path}"
    assert response.status_code < 500, f"{who}: {op} -> {response.status_code} {response.text[:300]}"
    if not 200 <= response.status_code < 300:
        return
    if case.path.startswith("/api/warden/secrets"):
        # Any signed-in user keeps secrets of their own (the vault decides who manages which);
        # no answer ever carries a value.
        value = case.body.get("value") if isinstance(case.body, dict) else None
        assert not (isinstance(value, str) and len(value) >= 4 and value in response.text), f"{who}: {op} echoed the value"
        assert '"value"' not in response.text, f"{who}: {op} answered with a value: {response.text[:300]}"
        return
    if who == "admin":
        return
    may_manage = who == "manage" and all(_under_course(p) for p in _paths_of(case))
    if case.method != "GET" and case.path.startswith("/api/warden/") and "/kernels/" not in case.path:
        assert may_manage, f"{who} succeeded at {op} {case.query} {case.body!r}: {response.status_code}"
    if case.method == "GET" and (case.path in MANAGE_ONLY_READS or case.path == "/api/warden/audit"):
        assert may_manage, f"{who} read {op} {case.query}: {response.text[:300]}"
    may_read = who != "stranger" and all(_under_course(p) for p in _paths_of(case))
    if case.method == "GET" and case.path == "/api/warden/path-labels":
        assert may_read, f"{who} read the labels of {case.query}: {response.text[:300]}"
    if case.path == "/api/warden/permissions" and not may_read:
        assert response.json()["capabilities"] == [], f"{who} got capabilities: {response.text[:300]}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("who", USERS)
def test_the_api_holds_under_fuzzing(fuzz_server, who):
    base = f"http://127.0.0.1:{fuzz_server.port}"
    headers = {"Authorization": f"token {fuzz_server.tokens[who]}"}
    document = requests.get(f"{base}/api/warden/openapi.json", headers=headers, timeout=30).json()
    fuzzed = schemathesis.openapi.from_dict(document)
    known = schemathesis.openapi.from_dict(_with_known_values(document))
    settings = hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run, so a failure can be replayed
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    operations = [result.ok() for schema in (fuzzed, known) for result in schema.get_all_operations()]
    assert len(operations) >= 2 * 18

    for operation in operations:

        @settings
        @hypothesis.given(case=operation.as_strategy())
        def run(case):
            _check(who, case, case.call(base_url=base, headers=headers, timeout=30))

        run()

    # The log of everything the run did still verifies, and no allowed policy
    # change by this user lies outside what they may manage.
    store = Store(fuzz_server.db_url)
    try:
        audit = AuditLog(store, load_or_create_key(fuzz_server.state))
        assert audit.verify().ok
        if who != "admin":
            actor = who.replace("-", "")
            for record in audit.query(actor=actor):
                if record.action in POLICY_CHANGES and record.outcome == "allow":
                    assert who == "manage" and _under_course(record.path or ""), record
    finally:
        store.dispose()
