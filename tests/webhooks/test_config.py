from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.clientaddr import TrustedProxies
from gateway.errors import Forbidden
from gateway.webhooks import DedupeConfig, compile_webhook, parse_webhook_config
from gateway.webhooks.config import HmacWebhook, UrlTokenWebhook

TOKEN = {"type": "url_token", "secret_env": "KOMMO_WEBHOOK_SECRET", "param": "token"}
ENV = {"KOMMO_WEBHOOK_SECRET": "a-long-enough-url-token-0123456789"}


def test_defaults() -> None:
    cfg = parse_webhook_config({**TOKEN, "source_ips": "any"})
    assert isinstance(cfg, UrlTokenWebhook)
    assert cfg.dedupe == DedupeConfig(window_seconds=86400, in_progress_seconds=30)
    assert cfg.max_body_bytes == 1024 * 1024


def test_hmac_fields() -> None:
    cfg = parse_webhook_config(
        {
            "type": "hmac",
            "secret_env": "GH",
            "header": "X-Hub-Signature-256",
            "algorithm": "sha256",
            "encoding": "hex",
            "prefix": "sha256=",
            "source_ips": ["192.30.252.0/22", "2606:50c0::/32"],
            "dedupe": {"window_seconds": 3600},
            "max_body_bytes": 25 * 1024 * 1024,
        }
    )
    assert isinstance(cfg, HmacWebhook)
    assert cfg.dedupe == DedupeConfig(window_seconds=3600, in_progress_seconds=30)


def test_dedupe_false_disables() -> None:
    compiled = compile_webhook(
        parse_webhook_config({**TOKEN, "source_ips": "any", "dedupe": False}), ENV, True
    )
    assert compiled.dedupe is None


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param(TOKEN, "source_ips", id="source_ips_required"),
        pytest.param({**TOKEN, "source_ips": []}, "source_ips", id="source_ips_empty"),
        pytest.param({**TOKEN, "source_ips": "all"}, "source_ips", id="source_ips_not_any"),
        pytest.param({**TOKEN, "source_ips": ["10.0.0.0/33"]}, "source_ips", id="source_ips_bad_cidr"),
        pytest.param({**TOKEN, "source_ips": ["10.0.0.1/8"]}, "source_ips", id="source_ips_host_bits"),
        pytest.param({**TOKEN, "source_ips": "any", "extra": 1}, "extra", id="unknown_field"),
        pytest.param({**TOKEN, "source_ips": "any", "secret": "inline"}, "secret", id="inline_secret"),
        pytest.param({**TOKEN, "source_ips": "any", "dedupe": True}, "dedupe", id="dedupe_true"),
        pytest.param({**TOKEN, "source_ips": "any", "dedupe": {"window": 5}}, "dedupe", id="dedupe_unknown"),
        pytest.param(
            {**TOKEN, "source_ips": "any", "dedupe": {"window_seconds": 10, "in_progress_seconds": 60}},
            "dedupe",
            id="lock_longer_than_window",
        ),
        pytest.param({**TOKEN, "source_ips": "any", "max_body_bytes": 0}, "max_body_bytes", id="zero_cap"),
        pytest.param({**TOKEN, "source_ips": "any", "secret_env": "${X}"}, "secret_env", id="env_not_a_name"),
        pytest.param({"type": "jwt", "source_ips": "any"}, "type", id="unknown_type"),
        pytest.param(
            {
                "type": "hmac",
                "secret_env": "S",
                "header": "X Sig",
                "algorithm": "sha256",
                "encoding": "hex",
                "source_ips": "any",
            },
            "header",
            id="bad_header_name",
        ),
        pytest.param(
            {"type": "hmac", "secret_env": "S", "header": "X-Sig\n", "algorithm": "sha256", "encoding": "hex",
             "source_ips": "any"},
            "header",
            id="header_name_final_newline",  # `$` matched before it
        ),
        pytest.param(
            {
                "type": "hmac",
                "secret_env": "S",
                "header": "X-Sig",
                "algorithm": "md5",
                "encoding": "hex",
                "source_ips": "any",
            },
            "algorithm",
            id="md5_refused",
        ),
        pytest.param(
            {"type": "standard_webhooks", "secret_env": "S", "source_ips": "any", "tolerance_seconds": 0},
            "tolerance_seconds",
            id="zero_tolerance",
        ),
        pytest.param(
            {"type": "kommo_revoked", "client_id_env": "A", "source_ips": "any"},
            "client_secret_env",
            id="revoked_missing_secret",
        ),
    ],
)
def test_invalid_config_refused(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_webhook_config(data)
    assert where in str(info.value)


# --- source_ips against the one client address ----------------------------------------------------

PROXIES = TrustedProxies(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "allowed"),
    [
        pytest.param("203.0.113.5", [], True, id="allowed_direct"),
        pytest.param("198.51.100.1", [b"203.0.113.5"], False, id="spoofed_xff_from_untrusted_peer"),
        pytest.param("10.0.0.2", [b"203.0.113.5"], True, id="xff_from_trusted_proxy"),
        pytest.param("10.0.0.2", [b"198.51.100.1"], False, id="trusted_proxy_forwarding_denied_client"),
        pytest.param("10.0.0.2", [b"203.0.113.5, 198.51.100.1"], False, id="allowed_ip_planted_left"),
    ],
)
def test_source_ips_use_client_address(peer: str, xff: list[bytes], allowed: bool) -> None:
    hook = compile_webhook(parse_webhook_config({**TOKEN, "source_ips": ["203.0.113.0/24"]}), ENV, False)
    client = PROXIES.client_ip(peer, xff)
    if allowed:
        hook.check_source(client)
    else:
        with pytest.raises(Forbidden) as info:
            hook.check_source(client)
        assert info.value.reason == "webhook.source_denied"
        assert info.value.status == 403


def test_source_ips_any_allows_everyone() -> None:
    hook = compile_webhook(parse_webhook_config({**TOKEN, "source_ips": "any"}), ENV, False)
    assert hook.sources is None
    hook.check_source("198.51.100.1")
