"""The trusted-proxy identity mode, and the slowing of failed sign-ins."""

from __future__ import annotations

import json

import pytest

from conftest import NO_AUTH, Browser


class TestTrustedProxy:
    @pytest.fixture
    def warden_config(self):
        return {"identity": "proxy", "proxy_header": "X-Remote-User"}

    async def test_the_header_names_the_user_from_a_trusted_address(self, jp_fetch, warden):
        response = await jp_fetch("api", "me", headers={**NO_AUTH, "X-Remote-User": "erin"})
        identity = json.loads(response.body)["identity"]
        assert identity["username"] == "erin"
        assert warden.accounts.get_user("erin") is not None

    async def test_no_header_from_the_proxy_means_not_signed_in(self, jp_fetch, warden):
        response = await jp_fetch("api", "me", headers=NO_AUTH, raise_error=False)
        assert response.code == 403

    async def test_a_bad_name_from_the_proxy_is_refused(self, jp_fetch, warden):
        response = await jp_fetch(
            "api", "me", headers={**NO_AUTH, "X-Remote-User": "../root"}, raise_error=False
        )
        assert response.code == 403
        assert "not allowed" in json.loads(response.body)["message"]

    async def test_password_sign_in_is_off(self, jp_fetch, warden):
        warden.accounts.add_user("bob", password="bob-password")
        response = await Browser(jp_fetch).sign_in("bob", "bob-password")
        assert response.code == 403


class TestUntrustedAddress:
    @pytest.fixture
    def warden_config(self):
        return {"identity": "proxy", "trusted_proxies": ["10.11.12.0/24"]}

    async def test_the_header_is_ignored_and_the_request_refused(self, jp_fetch, warden):
        warden.accounts.add_user("alice", password="alice-password", admin=True)
        response = await jp_fetch(
            "api", "me", headers={**NO_AUTH, "X-Forwarded-User": "alice"}, raise_error=False
        )
        assert response.code == 403
        message = json.loads(response.body)["message"]
        assert "did not come through" in message and "127.0.0.1" in message
        # Tokens don't bypass the proxy either.
        _id, token = warden.accounts.create_token("alice")
        response = await jp_fetch(
            "api", "me", headers={"Authorization": f"token {token}"}, raise_error=False
        )
        assert response.code == 403


class TestProxyWithoutAutoCreate:
    @pytest.fixture
    def warden_config(self):
        return {"identity": "proxy", "proxy_create_users": False}

    async def test_unknown_users_are_refused(self, jp_fetch, warden):
        response = await jp_fetch(
            "api", "me", headers={**NO_AUTH, "X-Forwarded-User": "mallory"}, raise_error=False
        )
        assert response.code == 403
        assert "no account" in json.loads(response.body)["message"]
        assert warden.accounts.get_user("mallory") is None
        warden.accounts.add_user("mallory")
        response = await jp_fetch("api", "me", headers={**NO_AUTH, "X-Forwarded-User": "Mallory"})
        assert json.loads(response.body)["identity"]["username"] == "mallory"


class TestThrottle:
    @pytest.fixture
    def warden_config(self):
        return {"signin_free_attempts": 2, "signin_base_delay": 60, "signin_max_delay": 600}

    async def test_failures_for_one_name_slow_that_name_down(self, jp_fetch, warden):
        warden.accounts.add_user("bob", password="bob-password")
        for _ in range(2):
            assert (await Browser(jp_fetch).sign_in("bob", "guess")).code == 403
        # Free attempts used up: the next, even with the right password, waits.
        blocked = await Browser(jp_fetch).sign_in("bob", "bob-password")
        assert blocked.code == 429
        assert int(blocked.headers["Retry-After"]) > 0
        assert b"Too many failed sign-ins" in blocked.body

    async def test_unknown_names_are_throttled_the_same_way(self, jp_fetch, warden):
        for _ in range(2):
            assert (await Browser(jp_fetch).sign_in("ghost", "guess")).code == 403
        assert (await Browser(jp_fetch).sign_in("ghost", "guess")).code == 429

    async def test_failures_from_one_address_slow_every_name_from_it(self, jp_fetch, warden):
        warden.accounts.add_user("carol", password="carol-password")
        for name in ["u1", "u2"]:
            await Browser(jp_fetch).sign_in(name, "guess")
        # Same address (127.0.0.1), a name that never failed: still throttled.
        assert (await Browser(jp_fetch).sign_in("carol", "carol-password")).code == 429


def test_the_delay_grows_and_is_capped():
    from jupyter_warden.identity.throttle import SignInThrottle

    now = [1000.0]
    throttle = SignInThrottle(free_attempts=2, base_delay=1, max_delay=8, clock=lambda: now[0])
    throttle.failed("k")
    assert throttle.retry_after("k") == 0
    waits = []
    for _ in range(6):
        throttle.failed("k")
        waits.append(throttle.retry_after("k"))
    assert waits == [1, 2, 4, 8, 8, 8]
    now[0] += 8
    assert throttle.retry_after("k") == 0
    throttle.succeeded("k")
    assert throttle.retry_after("k") == 0


class TestProxyBehindXHeaders:
    @pytest.fixture
    def warden_config(self):
        return {"identity": "proxy", "trusted_proxies": ["10.11.12.13/32"]}

    async def test_a_forged_x_real_ip_does_not_make_a_client_trusted(
        self, jp_serverapp, jp_base_url, warden
    ):
        # trust_xheaders makes tornado take remote_ip from X-Real-Ip, which
        # the client writes; trust must rest on the socket's peer instead.
        from tornado.httpclient import AsyncHTTPClient
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(jp_serverapp.web_app, xheaders=True)
        server.add_sockets(sockets)
        try:
            response = await AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{sockets[0].getsockname()[1]}{jp_base_url}api/me",
                headers={"X-Real-Ip": "10.11.12.13", "X-Forwarded-User": "alice"},
                raise_error=False,
            )
        finally:
            server.stop()
        assert response.code == 403
        assert warden.accounts.get_user("alice") is None


class TestThrottleUnderParallelAttempts:
    @pytest.fixture
    def warden_config(self):
        return {"signin_free_attempts": 3, "signin_base_delay": 60}

    async def test_parallel_guesses_can_not_outrun_the_count(self, jp_fetch, warden):
        import asyncio

        warden.accounts.add_user("bob", password="bob-password")
        browsers = [Browser(jp_fetch) for _ in range(12)]
        for b in browsers:
            await b.request("login")  # collect XSRF cookies first
        results = await asyncio.gather(*(b.sign_in("bob", f"guess{i}") for i, b in enumerate(browsers)))
        codes = sorted(r.code for r in results)
        assert codes.count(403) <= 3, codes
        assert codes.count(429) >= 9, codes
