"""Sign-in, sign-out, cookies and API tokens on a real server, over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from conftest import NO_AUTH, Browser, auth
from jupyter_warden.identity.provider import INVALID_CREDENTIALS


async def test_unauthenticated_requests_are_refused(jp_fetch, warden):
    api = await jp_fetch("api", "contents", headers=NO_AUTH, raise_error=False)
    assert api.code == 403
    page = await jp_fetch("lab", headers=NO_AUTH, raise_error=False, follow_redirects=False)
    assert page.code == 302
    assert "/login?next=" in page.headers["Location"]


async def test_the_server_wide_jupyter_token_is_not_an_identity(jp_fetch, jp_serverapp, warden):
    jp_serverapp.identity_provider.token = "server-wide-secret"
    response = await jp_fetch("api", "contents", headers=auth("server-wide-secret"), raise_error=False)
    assert response.code == 403
    response = await jp_fetch(
        "api", "contents", headers=NO_AUTH, params={"token": "server-wide-secret"}, raise_error=False
    )
    assert response.code == 403


async def test_sign_in_sets_a_safe_cookie_and_signs_the_browser_in(jp_fetch, make_user):
    make_user("bob", password="bob-password")
    browser = Browser(jp_fetch)
    response = await browser.sign_in("bob", "bob-password")
    assert response.code == 302
    session_cookie = next(c for c in browser.last_set_cookie if c.startswith("warden-session-"))
    attributes = session_cookie.lower()
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes  # plain HTTP here; see the TLS test below
    me = await browser.request("api", "me")
    assert me.code == 200
    assert json.loads(me.body)["identity"]["username"] == "bob"
    contents = await browser.request("api", "contents")
    assert contents.code == 200


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


async def test_the_cookie_is_secure_under_tls(jp_serverapp, jp_base_url, make_user, tmp_path):
    import ssl
    from urllib.parse import urlencode

    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    make_user("bob", password="bob-password")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*_self_signed(tmp_path))
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    server = HTTPServer(jp_serverapp.web_app, ssl_options=context)
    server.add_sockets(sockets)
    try:
        client = AsyncHTTPClient()
        base = f"https://127.0.0.1:{port}{jp_base_url}login"
        page = await client.fetch(base, validate_cert=False, request_timeout=20)
        xsrf = next(
            c.split(";")[0].split("=", 1)[1]
            for c in page.headers.get_list("Set-Cookie")
            if c.startswith("_xsrf=")
        )
        response = await client.fetch(
            base,
            method="POST",
            body=urlencode({"username": "bob", "password": "bob-password", "_xsrf": xsrf}),
            headers={"Cookie": f"_xsrf={xsrf}"},
            validate_cert=False,
            follow_redirects=False,
            raise_error=False,
        )
        assert response.code == 302
        cookie = next(
            c for c in response.headers.get_list("Set-Cookie") if c.startswith("warden-session-")
        )
        assert "; secure" in cookie.lower()
        assert "httponly" in cookie.lower()
    finally:
        server.stop()


async def test_a_forged_or_replayed_cookie_is_refused(jp_fetch, make_user):
    make_user("bob", password="bob-password")
    browser = Browser(jp_fetch)
    await browser.sign_in("bob", "bob-password")
    name = next(k for k in browser.cookies if k.startswith("warden-session-"))
    forged = Browser(jp_fetch)
    forged.cookies[name] = browser.cookies[name][:-4] + "AAAA"
    assert (await forged.request("api", "me")).code == 403
    # Sign out, then replay the old cookie: the session is gone server-side.
    stolen = dict(browser.cookies)
    out = await browser.request("logout")
    assert out.code == 200 and b"Signed out" in out.body
    replay = Browser(jp_fetch)
    replay.cookies.update(stolen)
    assert (await replay.request("api", "me")).code == 403


def _page(response) -> str:
    """The page without its per-browser XSRF token."""
    return re.sub(r'name="_xsrf" value="[^"]*"', "", response.body.decode())


async def test_wrong_password_unknown_user_and_expired_token_read_the_same(
    jp_fetch, make_user, warden
):
    make_user("bob", password="bob-password")
    wrong = await Browser(jp_fetch).sign_in("bob", "not-his-password")
    unknown = await Browser(jp_fetch).sign_in("nobody", "bob-password")
    assert wrong.code == unknown.code == 403
    assert INVALID_CREDENTIALS.encode() in wrong.body
    assert _page(wrong) == _page(unknown)
    # A passwordless account (roster import) can't sign in with any password.
    warden.accounts.add_user("rostered")
    passwordless = await Browser(jp_fetch).sign_in("rostered", "")
    assert passwordless.code == 403 and _page(passwordless) == _page(wrong)

    token_id, token = warden.accounts.create_token(
        "bob", expires_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    )
    assert (await jp_fetch("api", "me", headers=auth(token))).code == 200
    import asyncio

    await asyncio.sleep(1.2)
    expired = await jp_fetch("api", "me", headers=auth(token), raise_error=False)
    assert expired.code == 403
    assert json.loads(expired.body)["message"] == INVALID_CREDENTIALS


async def test_unknown_users_cost_one_password_hash_like_known_ones(warden):
    from argon2 import PasswordHasher

    from jupyter_warden.identity.accounts import Accounts

    calls = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash_, password):
            calls.append(hash_)
            return super().verify(hash_, password)

    accounts = Accounts(warden.store, hasher=CountingHasher())
    accounts.add_user("bob", password="bob-password")
    assert accounts.verify_password("bob", "wrong-password") is None
    assert accounts.verify_password("nobody", "wrong-password") is None
    assert accounts.verify_password("bad/name", "wrong-password") is None
    assert len(calls) == 3
    # Same argon2 parameters for the decoy as for real hashes.
    assert len({c.rsplit("$", 2)[0] for c in calls}) == 1


@pytest.mark.parametrize(
    "header",
    ["token", "token ", "Basic dXNlcjpwYXNz", "tokenabc", "token a b", "token wdn_\u00e9"],
)
async def test_malformed_authorization_header_is_a_clear_4xx(jp_fetch, warden, header):
    response = await jp_fetch("api", "me", headers={"Authorization": header}, raise_error=False)
    assert response.code == 400
    assert "malformed Authorization header" in json.loads(response.body)["message"]


async def test_api_tokens_authenticate_and_revocation_is_immediate(jp_fetch, warden):
    warden.accounts.add_user("carol", password="carol-password")
    token_id, token = warden.accounts.create_token("carol", note="script")
    me = await jp_fetch("api", "me", headers=auth(token))
    assert json.loads(me.body)["identity"]["username"] == "carol"
    # Token-authenticated writes need no XSRF cookie, as in stock Jupyter.
    warden.policy.grant("", "user:carol", "read-write")
    made = await jp_fetch("api", "contents", method="POST", body="{}", headers=auth(token))
    assert made.code == 201
    warden.accounts.revoke_token("carol", token_id)
    refused = await jp_fetch("api", "me", headers=auth(token), raise_error=False)
    assert refused.code == 403
    # A token that never existed, and one with the wrong prefix.
    for bogus in ["wdn_" + "A" * 43, "0123456789abcdef"]:
        response = await jp_fetch("api", "me", headers=auth(bogus), raise_error=False)
        assert response.code == 403


async def test_tokens_are_stored_only_as_hashes(warden):
    warden.accounts.add_user("carol", password="carol-password")
    _id, token = warden.accounts.create_token("carol")
    from sqlalchemy import select

    from jupyter_warden.store.models import ApiToken

    with warden.store.transaction() as s:
        stored = s.scalars(select(ApiToken.token_hash)).all()
    assert token not in stored and len(stored[0]) == 64


async def test_password_change_ends_browser_sessions(jp_fetch, make_user, warden):
    make_user("bob", password="bob-password")
    browser = Browser(jp_fetch)
    await browser.sign_in("bob", "bob-password")
    assert (await browser.request("api", "me")).code == 200
    warden.accounts.set_password("bob", "a-new-password")
    assert (await browser.request("api", "me")).code == 403
    again = Browser(jp_fetch)
    assert (await again.sign_in("bob", "bob-password")).code == 403
    assert (await again.sign_in("bob", "a-new-password")).code == 302


async def test_account_removal_ends_sessions_and_tokens(jp_fetch, make_user, warden):
    token = make_user("bob", password="bob-password")
    browser = Browser(jp_fetch)
    await browser.sign_in("bob", "bob-password")
    warden.accounts.remove_user("bob")
    assert (await browser.request("api", "me")).code == 403
    assert (await jp_fetch("api", "me", headers=auth(token), raise_error=False)).code == 403
    # A new account with the same name does not inherit the old session.
    warden.accounts.add_user("bob", password="bob-password")
    assert (await browser.request("api", "me")).code == 403


async def test_the_login_redirect_stays_on_this_server(jp_fetch, make_user):
    make_user("bob", password="bob-password")
    browser = Browser(jp_fetch)
    await browser.request("login")
    from urllib.parse import urlencode

    body = urlencode(
        {"username": "bob", "password": "bob-password", "_xsrf": browser.cookies["_xsrf"]}
    )
    response = await browser.request(
        "login",
        method="POST",
        body=body,
        params={"next": "https://evil.example/steal"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.code == 302
    assert "evil.example" not in response.headers["Location"]


async def test_sign_in_without_xsrf_is_refused(jp_fetch, make_user):
    make_user("bob", password="bob-password")
    from urllib.parse import urlencode

    response = await jp_fetch(
        "login",
        method="POST",
        body=urlencode({"username": "bob", "password": "bob-password"}),
        headers={**NO_AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        raise_error=False,
        follow_redirects=False,
    )
    assert response.code == 403
    assert not any(c.startswith("warden-session-") for c in response.headers.get_list("Set-Cookie"))


async def test_identity_model_has_display_name_initials_and_colour(jp_fetch, warden):
    warden.accounts.add_user("dora", password="dora-password", display_name="Dora Explorer")
    _id, token = warden.accounts.create_token("dora")
    identity = json.loads((await jp_fetch("api", "me", headers=auth(token))).body)["identity"]
    assert identity["username"] == "dora"
    assert identity["display_name"] == "Dora Explorer"
    assert identity["initials"] == "DE"
    assert identity["color"].startswith("var(--jp-collaborator-color")


async def test_sign_in_sign_out_and_failures_are_audited(jp_fetch, make_user, warden):
    make_user("bob", password="bob-password")
    await Browser(jp_fetch).sign_in("bob", "wrong-password")
    await Browser(jp_fetch).sign_in("nobody", "wrong-password")
    browser = Browser(jp_fetch)
    await browser.sign_in("bob", "bob-password")
    await browser.request("logout")
    records = [(r.actor, r.action, r.outcome) for r in warden.audit.query()]
    assert records == [
        ("bob", "auth.sign_in_failed", "deny"),
        ("nobody", "auth.sign_in_failed", "deny"),
        ("bob", "auth.sign_in", "allow"),
        ("bob", "auth.sign_out", "allow"),
    ]
    assert all(r.client == "127.0.0.1" for r in warden.audit.query())
    assert warden.audit.verify().ok
