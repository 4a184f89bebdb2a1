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
        # Notifications (JupyterLab's news question, refusals) would cover the view.
        hide = await page.add_style_tag(content=".Toastify { display: none !important; }")
        await page.screenshot(path=str(tmp_path / f"{name}.png"))
        await hide.evaluate("node => node.remove()")
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

    async def open_as(self, user, password="correct-horse", path="shared/nb.ipynb",
                      ready=".jp-NotebookPanel .jp-Cell"):
        context = await self._browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(60_000)
        await page.goto(self.base + "lab/tree/" + path)  # redirected to the login page
        await page.fill("#username", user)
        await page.fill("#password", password)
        await page.click("#login_submit")
        await page.wait_for_url("**/lab/**")
        await page.wait_for_selector(ready)
        try:
            await page.wait_for_selector(".jp-Document .jp-warden-badge[data-level]", timeout=20_000)
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
        # Told on the event bus (polled every second only if the bus is down):
        # a notice, then a request, on a loaded machine.
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


SEALED_SOURCE = 'SEALED_MARKER_total = sum(range(7)) * 2\nprint("check passed:", SEALED_MARKER_total)\n'


async def test_a_student_runs_a_sealed_cell_and_its_source_never_reaches_the_page(
    lab, make_user, warden, jp_root_dir, shots
):
    async with lab as open_as:
        make_user("sam")
        warden.key_ring.create("cs101-checks")
        warden.key_ring.grant("cs101-checks", "user:sam")
        warden.policy.grant("shared", "user:sam", "read-write-run")
        placeholder = warden.key_ring.seal("cs101-checks", "check-1", SEALED_SOURCE)
        notebook = {**NOTEBOOK, "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "Run the check below.", "id": "intro"},
            {"cell_type": "code", "metadata": {}, "source": placeholder, "id": "check-1",
             "execution_count": None, "outputs": []},
        ]}
        (jp_root_dir / "shared" / "assignment.ipynb").write_text(json.dumps(notebook))

        page = await open_as("sam", path="shared/assignment.ipynb")
        sealed = page.locator(".jp-NotebookPanel .jp-Cell.jp-warden-sealed")
        card = sealed.locator(".jp-warden-sealed-card")
        await card.wait_for()
        assert "Sealed cell" in await card.inner_text()
        assert "cs101-checks" in await card.inner_text()
        # No editor in the page for it: nothing to read, type into or select.
        assert await sealed.locator(".cm-editor").count() == 0

        # Copying, cutting or turning it into markdown is refused, with the reason.
        await card.click()
        for key in ("c", "x", "m"):
            await page.keyboard.press(key)
        await page.locator(".Toastify__toast", has_text="Sealed cells can't be copied").first.wait_for()
        await page.locator(".Toastify__toast", has_text="A sealed cell can't be changed").first.wait_for()
        assert await page.locator(".jp-NotebookPanel .jp-Cell").count() == 2
        assert await sealed.count() == 1

        await page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        await card.locator("button.jp-warden-sealed-run").click()
        output = sealed.locator(".jp-OutputArea-output")
        await output.wait_for(timeout=120_000)
        assert (await output.inner_text()).strip() == "check passed: 42"
        # Finished (sealed code runs outside the history, so the prompt shows no count).
        await page.wait_for_function(
            "() => !document.querySelector('.jp-warden-sealed .jp-InputArea-prompt').textContent.includes('*')")
        html = await page.content()
        assert "SEALED_MARKER" not in html and "sum(range(7))" not in html
        # Not even the ciphertext of the placeholder is in the page.
        assert placeholder.splitlines()[2][2:40] not in html
        await shots(page, "sealed-cell")


async def test_the_secrets_panel_adds_replaces_and_deletes_and_never_shows_a_value(
    lab, make_user, warden, shots
):
    async with lab as open_as:
        make_user("alice")
        make_user("bob")
        warden.policy.grant("shared", "user:alice", "read")
        warden.vault.set("TEAM_TOKEN", "team-token-value-0451", None, owner="user:bob")
        warden.vault.grant("TEAM_TOKEN", "user:alice", None)

        page = await open_as("alice")
        await page.locator(".lm-TabBar-tab[data-id='jp-warden-secrets']").click()
        panel = page.locator("#jp-warden-secrets")
        granted = panel.locator("li[data-secret='TEAM_TOKEN']")
        assert "granted to you by user:bob" in await granted.inner_text()
        assert await granted.locator("button.jp-warden-secret-remove").is_disabled()

        first, second = "first-value-S3cr3t-1207", "second-value-S3cr3t-8812"
        await panel.locator("input.jp-warden-secret-new-name").fill("DB_PASSWORD")
        value = panel.locator(".jp-warden-secret-new input.jp-warden-secret-value")
        assert await value.get_attribute("type") == "password"
        await value.fill(first)
        await panel.locator("button.jp-warden-secret-add").click()
        row = panel.locator("li[data-secret='DB_PASSWORD']")
        await row.wait_for()
        assert await value.input_value() == ""
        assert warden.vault.read("user:alice", "DB_PASSWORD") == first

        await row.locator("button.jp-warden-secret-replace").click()
        await row.locator("input.jp-warden-secret-value").fill(second)
        await row.locator("button.jp-warden-secret-save").click()
        await panel.locator(".jp-warden-status", has_text="value replaced").wait_for()
        assert warden.vault.read("user:alice", "DB_PASSWORD") == second
        await row.locator("input.jp-warden-secret-subject").fill("user:bob")
        await row.locator("button.jp-warden-secret-grant").click()
        await row.locator(".jp-warden-chip[data-subject='user:bob']").wait_for()
        await shots(page, "secrets-panel")
        # No value is anywhere in the page: not in the DOM, not in a field.
        values = await page.evaluate("() => [...document.querySelectorAll('input')].map(i => i.value)")
        html = await page.content()
        for secret in (first, second, "team-token-value-0451"):
            assert secret not in html and secret not in values

        await row.locator("button.jp-warden-secret-remove").click()
        await page.locator(".jp-Dialog button.jp-mod-warn").click()
        await row.wait_for(state="detached")
        assert [s.name for s in warden.vault.list(None)] == ["TEAM_TOKEN"]


async def test_a_text_file_shows_its_level_and_follows_a_grant_through_the_event_bus(
    lab, make_user, warden, jp_root_dir, shots
):
    async with lab as open_as:
        make_user("bob")
        (jp_root_dir / "shared" / "notes.txt").write_text("meeting notes\n")
        warden.policy.grant("shared/notes.txt", "user:bob", "read")

        page = await open_as("bob", path="shared/notes.txt", ready=".jp-FileEditor .cm-content")
        editor = page.locator(".jp-FileEditor .cm-content")
        badge = page.locator(".jp-Document .jp-warden-badge")
        assert await badge.get_attribute("data-level") == "read"
        assert "Read only: you can read this file" in await page.locator(".jp-Document .jp-warden-notice").inner_text()
        before = await editor.inner_text()
        assert before.startswith("meeting notes")
        await editor.click()
        await page.keyboard.type("typed by a reader ")
        assert await editor.inner_text() == before
        await shots(page, "text-file-read-only")

        # The page listens on the event bus: a grant reaches it as a notice, not a poll.
        await page.wait_for_function("() => document.body.dataset.wardenLive === 'yes'", timeout=15_000)
        notices = int(await page.evaluate("() => document.body.dataset.wardenNotices"))
        warden.policy.grant("shared/notes.txt", "user:bob", "read-write")
        await page.wait_for_function(f"() => Number(document.body.dataset.wardenNotices) > {notices}",
                                     timeout=5_000)
        await page.locator(".jp-Document .jp-warden-badge[data-level='read-write']").wait_for(timeout=5_000)
        await page.locator(".jp-FileEditor .cm-line").first.click()
        await page.keyboard.press("End")
        await page.keyboard.type(" and more")
        assert "meeting notes and more" in await editor.inner_text()


@pytest.mark.parametrize("warden_config", [{"kernel_max_age": 12}])
async def test_a_kernel_the_server_stopped_is_explained_in_the_page(lab, make_user, warden, tmp_path, warden_config):
    # Sandboxed (the default): the sandbox stops a kernel at its maximum age,
    # here with no cell running, so no cell shows why; the page asks the server.
    assert warden.sandbox_runner is not None, "the sandbox is needed here: run as root with bubblewrap"
    async with lab as open_as:
        make_user("bob")
        warden.policy.grant("shared/nb.ipynb", "user:bob", "read-run")
        page = await open_as("bob")
        await page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        toast = page.locator(".Toastify__toast", has_text="maximum kernel age")
        await toast.wait_for(timeout=60_000)
        text = await toast.inner_text()
        assert "c.Warden.kernel_max_age" in text and "[jupyter-warden]" not in text, text
        # Said once, however many ways the page learns of the end.
        await page.wait_for_timeout(2000)
        assert await page.locator(".Toastify__toast", has_text="maximum kernel age").count() == 1
        await page.screenshot(path=str(tmp_path / "kernel-stopped.png"))  # with the notification
