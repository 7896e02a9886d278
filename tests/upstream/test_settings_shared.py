"""The upstream keeps its own copies of the settings it shares with the gateway; they must not drift.

Both processes read `GATEWAY_IDENTITY_SECRET`; in development, with the variable unset, each falls back
to its own copy of the default, so a drift would make every gateway-signed identity fail at the upstream.
"""

from __future__ import annotations

import gateway.settings as gw
import upstream_stub.settings as up


def test_dev_identity_secret_is_the_same_on_both_sides() -> None:
    assert up.DEV_IDENTITY_SECRET == gw.DEV_IDENTITY_SECRET


def test_dev_marker_and_minimum_length_are_the_same_on_both_sides() -> None:
    assert up.DEV_MARKER == gw.DEV_MARKER
    assert up.MIN_SECRET_BYTES == gw.MIN_SECRET_BYTES
    assert up.DEV_IDENTITY_SECRET.startswith(up.DEV_MARKER)


def test_effective_dev_defaults_agree(monkeypatch) -> None:
    monkeypatch.delenv("GATEWAY_IDENTITY_SECRET", raising=False)
    monkeypatch.setenv("GATEWAY_ENV", "development")
    assert up.UpstreamSettings().effective_identity_secret() == gw.DEV_IDENTITY_SECRET
