"""Sign-in and sign-out as a person does it: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest
from playwright.async_api import async_playwright

CHROMIUM = os.environ.get("WARDEN_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chromium_page():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-deps.sh (make test does)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            yield await (await browser.new_context()).new_page()
        finally:
            await browser.close()


async def test_a_user_signs_in_reaches_jupyterlab_and_signs_out(
    jp_fetch, jp_http_port, jp_base_url, make_user, warden, tmp_path
):
    # jp_fetch is here for its side effect: it starts the HTTP server.
    make_user("bob", password="bob-password")
    async with chromium_page() as page:
        await _sign_in_and_out(page, jp_http_port, jp_base_url, tmp_path)


async def _sign_in_and_out(page, jp_http_port, jp_base_url, tmp_path):
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"

    await page.goto(base + "lab")
    assert "/login" in page.url
    await page.fill("#username", "bob")
    await page.fill("#password", "not-bobs")
    await page.click("#login_submit")
    assert "Invalid credentials" in await page.inner_text("#warden-message")

    await page.fill("#username", "bob")
    await page.fill("#password", "bob-password")
    await page.click("#login_submit")
    await page.wait_for_url("**/lab**", timeout=60_000)
    await page.wait_for_selector(".jp-DirListing", timeout=60_000)
    await page.screenshot(path=str(tmp_path / "lab.png"))
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = next(c for n, c in cookies.items() if n.startswith("warden-session-"))
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    me = await page.evaluate(
        "async (url) => (await (await fetch(url)).json()).identity.username", base + "api/me"
    )
    assert me == "bob"

    await page.goto(base + "logout")
    assert "Signed out" in await page.inner_text("h1")
    await page.goto(base + "lab")
    assert "/login" in page.url
