"""The JupyterLab extension in a real browser: Debian's Chromium driven by Playwright,
against a real server with the warden and the built extension loaded.

Each test signs in through the login page, opens a notebook in JupyterLab and
checks what the person sees and can do. Screenshots go to the test's tmp_path
(and, with WARDEN_SCREENSHOTS=DIR, to DIR too: docs/ui.md shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from conftest import auth
from test_browser_signin import CHROMIUM, LAUNCH_ARGS

LABEXTENSION = Path(__file__).resolve().parent.parent / "jupyter_warden" / "labextension"

NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {}, "source": "answer = 6 * 7\nanswer", "id": "c1",
         "execution_count": None, "outputs": []},
        {"cell_type": "markdown", "metadata": {}, "source": "Some notes", "id": "c2"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture(scope="session")
def labextensions(tmp_path_factory):
    """A labextensions folder holding the built extension under its package name."""
    if not (LABEXTENSION / "package.json").exists():
        pytest.fail(f"{LABEXTENSION} is not built: run `jlpm install && jlpm build:prod` (make venv does)")
    folder = tmp_path_factory.mktemp("labextensions")
    (folder / "jupyter-warden").symlink_to(LABEXTENSION)
    return folder


@pytest.fixture
def extra_server_config(labextensions):
    return {"LabApp": {"extra_labextensions_path": [str(labextensions)]}}


@pytest.fixture
def warden_config():
    # The UI is under test here, not the sandbox: kernels start faster without it.
    return {"sandbox": "none"}


@pytest.fixture
def shots(tmp_path):
    """Save a screenshot as a test artifact (and into WARDEN_SCREENSHOTS if set)."""
    extra = os.environ.get("WARDEN_SCREENSHOTS")

    async def shot(page, name):
        await page.screenshot(path=str(tmp_path / f"{name}.png"))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / f"{name}.png", Path(extra) / f"{name}.png")

    return shot


class Lab:
    """Chromium on the test server: ``async with lab as open_as`` then
    ``page = await open_as(user)`` signs in and opens the notebook."""

    def __init__(self, base, base_url):
        self.base, self.base_url = base, base_url

    async def __aenter__(self):
        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
        )
        return self.open_as

    async def __aexit__(self, *exc):
        await self._browser.close()
        await self._playwright.stop()

    async def open_as(self, user, password="correct-horse", path="shared/nb.ipynb"):
        context = await self._browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(60_000)
        await page.goto(self.base + "lab/tree/" + path)  # redirected to the login page
        await page.fill("#username", user)
        await page.fill("#password", password)
        await page.click("#login_submit")
        await page.wait_for_url("**/lab/**")
        await page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content")
        try:
            await page.wait_for_selector(".jp-NotebookPanel .jp-warden-badge[data-level]", timeout=20_000)
        except Exception:
            await page.screenshot(path="/tmp/labext-debug.png")
            raise
        return page


@pytest.fixture
def lab(jp_fetch, jp_http_port, jp_base_url, jp_root_dir, warden):
    """A Lab on the running server, with shared/nb.ipynb in its root."""
    # jp_fetch is here for its side effect: it starts the HTTP server.
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-deps.sh (make test does)")
    (jp_root_dir / "shared").mkdir()
    (jp_root_dir / "shared" / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    return Lab(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_base_url)


def first_cell(page):
    return page.locator(".jp-NotebookPanel .jp-Cell").first


async def cell_text(page):
    return await first_cell(page).locator(".cm-content").inner_text()


async def test_a_reader_cannot_type_into_a_cell_and_sees_read_only(lab, make_user, warden, shots):
    async with lab as open_as:
        make_user("alice")
        make_user("bob")
        warden.policy.grant("shared", "user:alice", "manage")
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read")

        page = await open_as("bob")
        badge = page.locator(".jp-warden-badge")
        assert await badge.get_attribute("data-level") == "read"
        assert await badge.inner_text() == "Read only"
        assert "Read only" in await page.locator(".jp-warden-notice").inner_text()
        assert await page.locator(".jp-warden-notice").is_visible()
        # CodeMirror's read-only state: it refuses every change (checked by typing below).
        await first_cell(page).locator(".cm-editor.jp-mod-readOnly").wait_for(timeout=5_000)

        before = await cell_text(page)
        await first_cell(page).locator(".cm-content").click()
        await page.keyboard.type("import os  # typed by a reader")
        await page.keyboard.press("Escape")
        # Command mode: 'd d' deletes a cell and 'a' inserts one, for a writer.
        await page.keyboard.press("d")
        await page.keyboard.press("d")
        await page.keyboard.press("a")
        await page.wait_for_timeout(500)
        assert await cell_text(page) == before
        assert await page.locator(".jp-NotebookPanel .jp-Cell").count() == 2
        # The page never asked for a kernel the server would refuse a reader.
        sessions = await page.evaluate(
            "async () => { const base = JSON.parse(document.getElementById('jupyter-config-data')"
            ".textContent).baseUrl; return (await (await fetch(base + 'api/sessions')).json()); }"
        )
        assert sessions == []
        await shots(page, "reader-read-only")


async def test_a_run_only_user_runs_cells_but_cannot_edit_them(lab, make_user, warden, shots):
    async with lab as open_as:
        make_user("bob")
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read-run")

        page = await open_as("bob")
        assert await page.locator(".jp-warden-badge").get_attribute("data-level") == "read-run"
        assert "Run only" in await page.locator(".jp-warden-notice").inner_text()
        before = await cell_text(page)
        await first_cell(page).locator(".cm-content").click()
        await page.keyboard.type("x = 1")
        assert await cell_text(page) == before
        # Running is allowed: a kernel starts for this user, and Shift+Enter gives the output.
        await page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        await first_cell(page).click()
        await page.keyboard.press("Escape")
        await page.keyboard.press("Shift+Enter")
        output = first_cell(page).locator(".jp-OutputArea-output")
        await output.wait_for(timeout=120_000)
        assert (await output.inner_text()).strip() == "42"
        await shots(page, "run-only")


async def test_a_labels_banner_shows_above_the_notebook(lab, make_user, warden, shots):
    async with lab as open_as:
        make_user("alice")
        warden.policy.grant("shared", "user:alice", "manage")
        warden.policy.define_label("confidential", banner="Confidential: need to know", colour="#b00")
        warden.policy.set_label("shared", "confidential")

        page = await open_as("alice")
        banner = page.locator(".jp-warden-banner[data-label='confidential']")
        assert await banner.inner_text() == "Confidential: need to know"
        box = await banner.bounding_box()
        assert box and box["height"] >= 20, f"the banner is not shown: {box}"
        colour = await banner.evaluate("node => getComputedStyle(node).backgroundColor")
        assert colour == "rgb(187, 0, 0)"
        assert await page.locator(".jp-warden-badge").get_attribute("data-level") == "manage"
        # Nothing is held back from a manager, so no notice.
        assert await page.locator(".jp-warden-notice").count() == 0
        await shots(page, "label-banner")


async def test_the_share_dialog_adds_a_grant_that_the_api_reports(
    lab, make_user, warden, jp_fetch, shots
):
    async with lab as open_as:
        alice = make_user("alice")
        make_user("carol")
        warden.accounts.add_group("cs101")
        warden.policy.grant("shared", "user:alice", "manage")

        page = await open_as("alice")
        await page.click(".jp-warden-share-button")
        dialog = page.locator(".jp-Dialog .jp-warden-share")
        await dialog.wait_for()
        # The inherited grant on the folder is listed, and can't be removed from here.
        inherited = dialog.locator("tr[data-subject='user:alice']")
        assert "inherited from 'shared'" in await inherited.inner_text()
        assert await inherited.locator("button").is_disabled()

        subject = dialog.locator("input.jp-warden-subject")
        await subject.fill("car")
        await subject.dispatch_event("input")
        await page.wait_for_selector("#jp-warden-principals option[value='user:carol']", state="attached")
        assert await page.locator("#jp-warden-principals option[value='group:cs101']").count() == 0
        await subject.fill("user:carol")
        await dialog.locator("select[name=level]").select_option("read-write")
        await dialog.locator("input[name=not_after]").fill("2099-01-01T10:00")
        await dialog.locator("button.jp-warden-add").click()
        await dialog.locator("tr[data-subject='user:carol']").wait_for()
        await shots(page, "share-dialog")

        response = await jp_fetch(
            "api", "warden", "grants", params={"path": "shared/nb.ipynb"}, headers=auth(alice)
        )
        grants = {g["subject"]: g for g in json.loads(response.body)["grants"]}
        assert grants["user:carol"]["level"] == "read-write"
        assert grants["user:carol"]["path"] == "shared/nb.ipynb"
        assert grants["user:carol"]["not_after"].startswith("2099-01-01")

        # Remove it again from the dialog.
        await dialog.locator("tr[data-subject='user:carol'] button.jp-warden-remove").click()
        await dialog.locator("tr[data-subject='user:carol']").wait_for(state="detached")
        assert "user:carol" not in {g.subject for g in warden.policy.grants_on("shared/nb.ipynb")}


async def test_the_share_dialog_makes_and_revokes_links_and_sets_labels(lab, make_user, warden):
    async with lab as open_as:
        make_user("alice")
        warden.policy.grant("shared", "user:alice", "manage")
        warden.policy.define_label("internal", banner="Internal", colour="navy")

        page = await open_as("alice")
        await page.click(".jp-warden-share-button")
        dialog = page.locator(".jp-Dialog .jp-warden-share")
        await dialog.locator("select[name=link-level]").select_option("read-run")
        await dialog.locator("button.jp-warden-create-link").click()
        url = await dialog.locator("input.jp-warden-link-url").input_value()
        assert "/warden/link/wdl_" in url
        [link] = warden.policy.list_links("shared/nb.ipynb")
        assert link.level == "read-run" and link.state() == "active"

        await dialog.locator("select[name=label]").select_option("internal")
        await dialog.locator("button.jp-warden-set-label").click()
        await dialog.locator("tr[data-label='internal']").wait_for()
        assert [label.name for label in warden.policy.labels_on("shared/nb.ipynb")] == ["internal"]
        # The page follows: the banner appears without a reload.
        await page.locator(".jp-warden-banner[data-label='internal']").wait_for(timeout=5_000)

        await dialog.locator(f"tr[data-link='{link.id}'] button.jp-warden-revoke-link").click()
        await dialog.locator(f"tr[data-link='{link.id}'] button.jp-warden-revoke-link[disabled]").wait_for()
        assert warden.policy.get_link(link.id).state() == "revoked"


async def test_the_share_dialog_shows_what_a_non_manager_may_not_do(lab, make_user, warden):
    async with lab as open_as:
        make_user("bob")
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read-write")

        page = await open_as("bob")
        await page.click(".jp-warden-share-button")
        dialog = page.locator(".jp-Dialog .jp-warden-share")
        add = dialog.locator("button.jp-warden-add")
        assert await add.is_disabled()
        assert "only someone with manage can share it" in await add.get_attribute("title")
        assert await dialog.locator("button.jp-warden-create-link").is_disabled()
        assert "only someone with manage" in await dialog.locator(".jp-warden-share-why").first.inner_text()


async def test_a_revoke_turns_an_open_page_read_only_without_reload(lab, make_user, warden, shots):
    async with lab as open_as:
        make_user("bob")
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read-write")

        page = await open_as("bob")
        editor = first_cell(page).locator(".cm-content")
        assert await first_cell(page).locator(".cm-editor.jp-mod-readOnly").count() == 0
        await editor.click()
        await page.keyboard.type("# bob was here\n")
        assert "bob was here" in await cell_text(page)
        marker = await page.evaluate("() => (window.__wardenNoReload = 1)")

        warden.policy.revoke("shared/nb.ipynb", "user:bob")
        start = time.monotonic()
        await page.wait_for_selector(
            ".jp-NotebookPanel .jp-Cell .cm-editor.jp-mod-readOnly", timeout=10_000
        )
        elapsed = time.monotonic() - start
        # Polled every second: within ~1 s, plus a request, on a loaded machine.
        assert elapsed < 2.5, f"the page followed the revocation after {elapsed:.2f} s"
        assert await page.evaluate("() => window.__wardenNoReload") == marker
        assert await page.locator(".jp-warden-badge").get_attribute("data-level") == "none"
        assert "no longer have access" in await page.locator(".jp-warden-notice").inner_text()
        text = await cell_text(page)
        await editor.click()
        await page.keyboard.type("more")
        assert await cell_text(page) == text
        await shots(page, "revoked")


async def test_a_manager_sees_the_audit_view_and_a_reader_does_not(
    lab, make_user, warden, jp_fetch, shots
):
    async with lab as open_as:
        make_user("alice")
        bob = make_user("bob")
        warden.policy.grant("shared", "user:alice", "manage")
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read")

        page = await open_as("alice")
        button = page.locator(".jp-warden-audit-button")
        await button.wait_for(state="visible")
        await button.click()
        view = page.locator(".jp-warden-audit")
        await view.locator("table").wait_for()
        actions = await view.locator("tr[data-action]").evaluate_all(
            "rows => rows.map(r => r.dataset.action)"
        )
        assert actions, "the audit view shows no records"
        await shots(page, "audit-view")

        reader = await open_as("bob")
        assert await reader.locator(".jp-warden-badge").get_attribute("data-level") == "read"
        assert await reader.locator(".jp-warden-audit-button").is_hidden()
        response = await jp_fetch(
            "api", "warden", "audit", params={"path": "shared/nb.ipynb"}, headers=auth(bob),
            raise_error=False,
        )
        assert response.code == 403


async def test_the_file_browser_menu_opens_the_share_dialog_of_the_item(lab, make_user, warden):
    async with lab as open_as:
        make_user("alice")
        warden.policy.grant("shared", "user:alice", "manage")

        page = await open_as("alice")
        await page.locator(".jp-DirListing-item[title*='nb.ipynb']").first.click(button="right")
        await page.locator(".lm-Menu-itemLabel", has_text="Share…").click()
        dialog = page.locator(".jp-Dialog")
        await dialog.locator(".jp-warden-share").wait_for()
        assert "Share shared/nb.ipynb" in await dialog.locator(".jp-Dialog-header").inner_text()


async def test_a_grant_turns_an_open_read_only_page_editable_without_reload(lab, make_user, warden):
    async with lab as open_as:
        make_user("bob")
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read")

        page = await open_as("bob")
        await first_cell(page).locator(".cm-editor.jp-mod-readOnly").wait_for(timeout=5_000)
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read-write")
        await page.locator(".jp-warden-badge[data-level='read-write']").wait_for(timeout=5_000)
        await page.wait_for_function(
            "() => !document.querySelector('.jp-NotebookPanel .jp-Cell .cm-editor.jp-mod-readOnly')",
            timeout=5_000,
        )
        await first_cell(page).locator(".cm-content").click()
        await page.keyboard.type("# now editable")
        assert "now editable" in await cell_text(page)
        assert "not run code" in await page.locator(".jp-warden-notice").inner_text()
