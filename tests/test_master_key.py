"""The master key: where it comes from, and that its blobs are bound to their use."""

import stat
import sys

import pytest

from jupyter_warden.master_key import MasterKeyError, load_master_key


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch):
    monkeypatch.delenv("WARDEN_MASTER_KEY", raising=False)
    monkeypatch.delenv("WARDEN_MASTER_KEY_COMMAND", raising=False)


def test_file_key_is_made_once_0600_and_kept(tmp_path):
    first = load_master_key(tmp_path)
    path = tmp_path / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = first.encrypt(b"secret", purpose="secret", context="7")
    assert load_master_key(tmp_path).decrypt(blob, purpose="secret", context="7") == b"secret"
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]


def test_blob_is_bound_to_purpose_and_context_and_key(tmp_path, monkeypatch):
    key = load_master_key(tmp_path)
    blob = key.encrypt(b"x", purpose="key-ring", context="cs101")
    with pytest.raises(MasterKeyError, match="does not open"):
        key.decrypt(blob, purpose="key-ring", context="cs102")
    with pytest.raises(MasterKeyError, match="does not open"):
        key.decrypt(blob, purpose="secret", context="cs101")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(MasterKeyError, match="does not open"):
        key.decrypt(tampered, purpose="key-ring", context="cs101")
    with pytest.raises(MasterKeyError, match="format"):
        key.decrypt(b"\x09" + blob[1:], purpose="key-ring", context="cs101")
    monkeypatch.setenv("WARDEN_MASTER_KEY", "ab" * 32)
    with pytest.raises(MasterKeyError, match="does not open"):
        load_master_key(tmp_path).decrypt(blob, purpose="key-ring", context="cs101")


def test_env_key_wins_and_bad_env_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_MASTER_KEY", "cd" * 32)
    blob = load_master_key(tmp_path).encrypt(b"v", purpose="p", context="c")
    assert not (tmp_path / "master.key").exists()
    monkeypatch.setenv("WARDEN_MASTER_KEY", "too short")
    with pytest.raises(MasterKeyError, match="not 32 bytes"):
        load_master_key(tmp_path)
    monkeypatch.setenv("WARDEN_MASTER_KEY", "cd" * 32)
    assert load_master_key(tmp_path).decrypt(blob, purpose="p", context="c") == b"v"


def test_command_key_and_failing_command(tmp_path, monkeypatch):
    ok = [sys.executable, "-c", "print('ef' * 32)"]
    blob = load_master_key(tmp_path, ok).encrypt(b"v", purpose="p", context="c")
    assert not (tmp_path / "master.key").exists()
    monkeypatch.setenv("WARDEN_MASTER_KEY_COMMAND", f"{sys.executable} -c \"print('ef' * 32)\"")
    assert load_master_key(tmp_path).decrypt(blob, purpose="p", context="c") == b"v"
    failing = [sys.executable, "-c", "import sys; sys.exit('kms unreachable')"]
    with pytest.raises(MasterKeyError, match="exited with status 1: kms unreachable"):
        load_master_key(tmp_path, failing)
    with pytest.raises(MasterKeyError, match="could not run"):
        load_master_key(tmp_path, ["/nonexistent/kms"])


def test_a_master_key_that_cant_be_had_stops_the_server(jp_configurable_serverapp, jp_server_config):
    jp_server_config["Warden"]["master_key_command"] = [sys.executable, "-c", "print('not a key')"]
    with pytest.raises(SystemExit, match="master key from the command"):
        jp_configurable_serverapp(config=jp_server_config)
