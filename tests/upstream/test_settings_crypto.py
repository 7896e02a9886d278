"""Start-up refusals in production, the keyring (rotation, binding) and key rotation end to end."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import DEV_IDENTITY_SECRET
from tests.upstream.kommo_fake import FakeKommo
from tests.upstream.support import ENC_KEY, connect, make_settings, running
from upstream_stub.app import StartupError, create_app
from upstream_stub.crypto import DecryptError, Keyring, KeyringError
from upstream_stub.settings import DEV_ENCRYPTION_KEY, UpstreamSettings

STRONG = "x" * 48
NEW_KEY = base64.b64encode(b"N" * 32).decode()


def _prod(tmp_path: Path, **kw: Any) -> UpstreamSettings:
    values: dict[str, Any] = dict(env="production", identity_secret=STRONG + "-id",
                                  state_secret=STRONG + "-st", encryption_key=ENC_KEY, kommo_client_id="id",
                                  kommo_client_secret="s", kommo_redirect_uri="https://gw/cb")
    values.update(kw)
    return make_settings(tmp_path, **values)


def test_production_with_real_secrets_starts(tmp_path: Path) -> None:
    create_app(_prod(tmp_path))


@pytest.mark.parametrize(("override", "variable"), [
    pytest.param({"identity_secret": None}, "GATEWAY_IDENTITY_SECRET", id="no_identity_secret"),
    pytest.param({"identity_secret": DEV_IDENTITY_SECRET}, "GATEWAY_IDENTITY_SECRET",
                 id="dev_identity_secret"),
    pytest.param({"identity_secret": "short"}, "GATEWAY_IDENTITY_SECRET", id="short_identity_secret"),
    pytest.param({"state_secret": None}, "UPSTREAM_STATE_SECRET", id="no_state_secret"),
    pytest.param({"encryption_key": None}, "UPSTREAM_ENCRYPTION_KEY", id="no_encryption_key"),
    pytest.param({"encryption_key": DEV_ENCRYPTION_KEY}, "UPSTREAM_ENCRYPTION_KEY", id="dev_encryption_key"),
    pytest.param({"kommo_client_secret": None}, "KOMMO_CLIENT_SECRET", id="no_kommo_secret"),
])
def test_production_refuses_unsafe_settings(tmp_path: Path, override: dict[str, Any], variable: str) -> None:
    with pytest.raises(StartupError, match=variable):
        create_app(_prod(tmp_path, **override))


def test_settings_come_from_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_PORT", "9191")
    monkeypatch.setenv("UPSTREAM_DB", ":memory:")
    monkeypatch.setenv("GATEWAY_IDENTITY_SECRET", "from-env")
    monkeypatch.setenv("UPSTREAM_IDENTITY_AUDIENCE", "aud-x")
    monkeypatch.setenv("KOMMO_CLIENT_ID", "cid")
    s = UpstreamSettings()
    assert (s.port, s.db_path, s.identity_secret, s.identity_audience, s.kommo_client_id) == (
        9191, ":memory:", "from-env", "aud-x", "cid")


def test_keyring_rotation_and_binding() -> None:
    old = Keyring(f"k0:{ENC_KEY}")
    sealed = old.seal(b"token", "crm_connections:org_a:c1")
    rotated = Keyring(f"k1:{NEW_KEY},k0:{ENC_KEY}")
    assert rotated.open(sealed, "crm_connections:org_a:c1") == b"token" and rotated.needs_rewrap(sealed)
    assert rotated.seal(b"t", "a").kid == "k1"
    with pytest.raises(DecryptError):
        rotated.open(sealed, "crm_connections:org_b:c1")  # copied into another org's row
    with pytest.raises(DecryptError):
        Keyring(f"k1:{NEW_KEY}").open(sealed, "crm_connections:org_a:c1")  # retired key


@pytest.mark.parametrize("spec", [
    pytest.param("", id="empty"),
    pytest.param("k0:not base64!", id="not_base64"),
    pytest.param("k0:" + base64.b64encode(b"short").decode(), id="short_key"),
    pytest.param(f"k0:{ENC_KEY},k0:{NEW_KEY}", id="duplicate_kid"),
    pytest.param(f"bad kid:{ENC_KEY}", id="bad_kid"),
    pytest.param(f"k0\n:{ENC_KEY}", id="kid_final_newline"),  # `$` matched before it
    pytest.param(ENC_KEY, id="no_kid"),
])
def test_keyring_rejects(spec: str) -> None:
    with pytest.raises(KeyringError):
        Keyring(spec)


def test_memory_database_is_allowed(tmp_path: Path) -> None:
    create_app(make_settings(tmp_path, db_path=":memory:"))


async def test_rotated_key_still_opens_old_tokens_and_reseals_on_refresh(tmp_path: Path,
                                                                         kommo: FakeKommo) -> None:
    kommo.expires_in = 60
    async with running(make_settings(tmp_path, worker_enabled=False)) as up:
        conn_id = await connect(up, kommo)
    kommo.expires_in = 86400
    keys = f"k1:{NEW_KEY},k0:{ENC_KEY}"
    async with running(make_settings(tmp_path, worker_enabled=False, encryption_keys=keys)) as up:
        assert (await up.svc.connections.get("org_a", conn_id))["secret_kid"] == "k0"
        r = await up.svc.api.get("org_a", conn_id, "/api/v4/leads")
        assert r.status_code == 200 and kommo.refreshes == 1
        assert (await up.svc.connections.get("org_a", conn_id))["secret_kid"] == "k1"
