"""The server refuses to start rather than run without the warden's rules."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from jupyter_warden.store import Store, ensure_state_dir


@pytest.mark.parametrize(
    "bad",
    [
        {"identity": "bogus"},
        {"trusted_proxies": ["not-a-network"]},
        {"db_url": "nonsense://"},
        {"db_url": "::::"},
    ],
)
def test_invalid_configuration_stops_the_server(jp_configurable_serverapp, jp_server_config, bad):
    jp_server_config["Warden"].update(bad)
    with pytest.raises(SystemExit, match="jupyter-warden"):
        jp_configurable_serverapp(config=jp_server_config)


def test_a_database_from_a_newer_version_stops_the_server(
    jp_configurable_serverapp, jp_server_config, warden_db_url, warden_state
):
    ensure_state_dir(warden_state)
    store = Store(warden_db_url)
    store.upgrade()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    store.dispose()
    with pytest.raises(SystemExit, match="newer version"):
        jp_configurable_serverapp(config=jp_server_config)


def test_a_root_inside_the_state_folder_stops_the_server(
    jp_configurable_serverapp, jp_server_config, tmp_path
):
    jp_server_config["Warden"]["state_dir"] = str(tmp_path)
    with pytest.raises(SystemExit, match="lies inside the warden state folder"):
        jp_configurable_serverapp(config=jp_server_config, root_dir=tmp_path / "root_dir")
