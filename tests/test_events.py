"""The event bus (/api/events/subscribe) for everyone signed in, filtered to the warden's access notices.

Real server, real websockets. A signed-in user who is not an admin gets the
warden's access notices (on subscribing, on a policy change, when a time
window closes) and nothing else from the bus: not another user's saves,
which carry paths (G1). Admins still get the whole bus; posting events stays
theirs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from conftest import Browser, auth
from jupyter_warden.enforce.events import ACCESS_SCHEMA_ID

CONTENTS_SCHEMA = "https://events.jupyter.org/jupyter_server/contents_service/v1"


@pytest.fixture
def subscribe(jp_fetch, jp_http_port, jp_base_url):
    sockets = []

    async def open_(token):
        url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/events/subscribe"
        ws = await websocket_connect(HTTPRequest(url, headers=auth(token)))
        sockets.append(ws)
        return ws

    yield open_
    for ws in sockets:
        ws.close()


async def next_event(ws, timeout=10.0) -> dict:
    message = await asyncio.wait_for(ws.read_message(), timeout)
    assert message is not None, "the server closed the event socket"
    return json.loads(message)


async def until_cause(ws, cause, seen, timeout=10.0) -> dict:
    """Read events (kept in ``seen``) until an access notice with this cause."""
    while True:
        event = await next_event(ws, timeout)
        seen.append(event)
        if event.get("schema_id") == ACCESS_SCHEMA_ID and event.get("cause") == cause:
            return event


async def test_a_user_gets_access_notices_and_not_others_events(subscribe, warden, make_user, jp_fetch):
    admin = make_user("root", admin=True)
    bob = make_user("bob")
    warden.policy.grant("", "user:bob", "read")
    ws = await subscribe(bob)
    watching = await subscribe(admin)
    hello = await next_event(ws)
    assert hello["schema_id"] == ACCESS_SCHEMA_ID
    assert hello["cause"] == "subscribed" and hello["heartbeat"] > 0
    await until_cause(watching, "subscribed", [])

    # The admin saves a file: a contents event naming its path goes on the bus.
    await jp_fetch("api", "contents", "private-plans.txt", method="PUT", headers=auth(admin),
                   body=json.dumps({"type": "file", "format": "text", "content": "x"}))
    admin_seen: list[dict] = []
    while not any(e.get("schema_id") == CONTENTS_SCHEMA and e.get("path") == "private-plans.txt"
                  for e in admin_seen):
        admin_seen.append(await next_event(watching))

    # Then a grant changes: bob is told that something changed, and nothing more.
    make_user("carol")
    warden.policy.grant("", "user:carol", "read")
    seen: list[dict] = []
    notice = await until_cause(ws, "policy", seen)
    assert set(notice) - {"schema_id", "cause"} <= {"__timestamp__", "__schema__", "__schema_version__",
                                                    "__metadata_version__"}
    # Events go out in the order they were emitted: the save's came first, and never reached bob.
    assert [e["schema_id"] for e in seen] == [ACCESS_SCHEMA_ID] * len(seen)
    assert "private-plans" not in json.dumps(seen)


async def test_a_closing_time_window_is_told(subscribe, warden, make_user):
    bob = make_user("bob")
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)
    warden.policy.grant("nb.ipynb", "user:bob", "read-write", not_after=soon)
    ws = await subscribe(bob)
    await until_cause(ws, "subscribed", [])
    await until_cause(ws, "time", [], timeout=15)
    assert dt.datetime.now(dt.timezone.utc) >= soon


async def test_a_link_guest_may_subscribe_and_posting_events_stays_with_admins(
    subscribe, warden, make_user, jp_fetch, jp_http_port, jp_base_url
):
    bob = make_user("bob")
    link, token = warden.policy.create_link("nb.ipynb", "read")
    guest = Browser(jp_fetch)
    assert (await guest.request("warden", "link", token)).code == 302
    await guest.request("lab")  # (a page: it sets the _xsrf cookie a browser echoes)
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/events/subscribe"
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in guest.cookies.items()),
               "X-XSRFToken": guest.cookies.get("_xsrf", "")}
    ws = await websocket_connect(HTTPRequest(url, headers=headers))
    try:
        await until_cause(ws, "subscribed", [])
        warden.policy.revoke_link(link.id)
        await until_cause(ws, "policy", [])
    finally:
        ws.close()

    await until_cause(await subscribe(bob), "subscribed", [])
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch("api", "events", method="POST", headers=auth(bob), body=json.dumps(
            {"schema_id": ACCESS_SCHEMA_ID, "version": "1", "data": {"cause": "policy"}}))
    assert refused.value.code == 403


async def test_no_sign_in_no_subscription(subscribe):
    with pytest.raises(HTTPClientError) as refused:
        await subscribe("not-a-token")
    assert refused.value.code in (302, 403)
