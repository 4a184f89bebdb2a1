"""Real-time collaboration in a real browser: a share link's follower sees a writer's edit live.

Chromium (Playwright) on a server with jupyter-collaboration on, as
test_browser_labext.py drives it for the rest of the extension: the writer and
the link's guest each have a JupyterLab page on the same notebook.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from test_browser_labext import cell_text, first_cell, lab, shots  # noqa: F401

TEXT = "answer = 6 * 7\nanswer"


@pytest.fixture
def server_extensions():
    return {"jupyter_warden": True, "jupyterlab": True,
            "jupyter_server_fileid": True, "jupyter_server_ydoc": True}


@pytest.fixture
def collaboration_labextensions(tmp_path_factory):
    """jupyter-collaboration's own JupyterLab extensions (installed in the environment, which
    pytest-jupyter hides from the server): the browser side of real-time collaboration."""
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "@jupyter"
    folder = tmp_path_factory.mktemp("collaboration-labextensions")
    (folder / "@jupyter").mkdir()
    for name in ("collaboration-extension", "docprovider-extension"):
        if not (installed / name / "package.json").exists():
            pytest.fail(f"{installed / name} is missing: jupyter-collaboration is a test dependency")
        (folder / "@jupyter" / name).symlink_to(installed / name)
    return folder


@pytest.fixture
def extra_server_config(labextensions, collaboration_labextensions, tmp_path):
    return {"LabApp": {"extra_labextensions_path": [str(labextensions), str(collaboration_labextensions)]},
            "YDocExtension": {"document_save_delay": 0.2},
            "SQLiteYStore": {"db_path": str(tmp_path / "ystore.db")}}


@pytest.fixture
def warden_config():
    return {"sandbox": "none"}


async def test_a_link_follower_sees_a_live_edit_and_cannot_type(lab, make_user, warden, jp_root_dir,  # noqa: F811
                                                                 shots):
    async with lab as open_as:
        make_user("alice")
        warden.policy.grant("shared", "user:alice", "read-write")
        writer = await open_as("alice")
        await first_cell(writer).locator(".cm-editor:not(.jp-mod-readOnly)").wait_for()

        _info, token = warden.policy.create_link("shared/nb.ipynb", "read")
        context = await lab._browser.new_context(viewport={"width": 1280, "height": 800})
        follower = await context.new_page()
        follower.set_default_timeout(60_000)
        await follower.goto(lab.base + "warden/link/" + token)  # a guest's session, then the notebook
        await follower.wait_for_url("**/lab/tree/shared/nb.ipynb")
        await follower.wait_for_selector(".jp-NotebookPanel .jp-Cell")
        badge = follower.locator(".jp-Document .jp-warden-badge[data-level]")
        await badge.wait_for()
        assert await badge.get_attribute("data-level") == "read"
        await first_cell(follower).locator(".cm-editor.jp-mod-readOnly").wait_for()
        assert TEXT in await cell_text(follower)

        # The writer types: the follower's page shows it, without a reload.
        await first_cell(writer).locator(".cm-content").click()
        await writer.keyboard.press("Control+End")
        await writer.keyboard.type("  # checked live")
        await follower.wait_for_function(
            "() => document.querySelector('.jp-NotebookPanel .jp-Cell .cm-content')"
            ".innerText.includes('# checked live')", timeout=15_000)
        await shots(follower, "link-follower-live")

        # The follower types: nothing changes, on its page, the writer's or the disk.
        await first_cell(follower).locator(".cm-content").click()
        await follower.keyboard.type("import os  # typed by a guest")
        await follower.wait_for_timeout(1_000)
        assert "typed by a guest" not in await cell_text(follower)
        assert "typed by a guest" not in await cell_text(writer)
        assert "typed by a guest" not in (jp_root_dir / "shared" / "nb.ipynb").read_text()
        await context.close()
