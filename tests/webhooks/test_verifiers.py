from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import Unauthorized
from gateway.webhooks import WebhookConfigError, compile_verifier, compile_webhook, parse_webhook_config
from gateway.webhooks.verifiers import Verifier

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "webhooks.json").read_text())

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_KEY = base64.b64decode(SW_SECRET.removeprefix("whsec_"))
CHAT_SECRET = "kommo-channel-secret-for-tests"
URL_TOKEN = "Zq3-fW9_kL2.pX7~tokenABCDEFGH"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "kommo-client-secret-for-tests"


def make_verifier(production: bool = False, **cfg: Any) -> Verifier:
    cfg.setdefault("source_ips", "any")
    env = cfg.pop("env", {})
    return compile_verifier(parse_webhook_config(cfg), env, production)


def call(
    v: Verifier,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    path_params: dict[str, str] | None = None,
    query: str = "",
    now: float = 0.0,
) -> str | None:
    return v.verify(path_params=path_params or {}, headers=headers or [], query=query, body=body, now=now)


def sw_verifier(tolerance: int = 300) -> Verifier:
    return make_verifier(
        type="standard_webhooks", secret_env="SW", tolerance_seconds=tolerance, env={"SW": SW_SECRET}
    )


def sw_sign(msg_id: str, ts: int, body: bytes, key: bytes = SW_KEY) -> bytes:
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return b"v1," + base64.b64encode(mac)


def sw_headers(msg_id: str, ts: int, sig: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"webhook-id", msg_id.encode()),
        (b"webhook-timestamp", str(ts).encode()),
        (b"webhook-signature", sig),
    ]


def chat_verifier() -> Verifier:
    return make_verifier(
        type="hmac",
        secret_env="CHAT",
        header="X-Signature",
        algorithm="sha1",
        encoding="hex",
        env={"CHAT": CHAT_SECRET},
    )


def chat_sig(body: bytes, secret: str = CHAT_SECRET) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest().encode()


def token_verifier() -> Verifier:
    return make_verifier(type="url_token", secret_env="TOK", param="token", env={"TOK": URL_TOKEN})


def revoked_verifier() -> Verifier:
    return make_verifier(
        type="kommo_revoked",
        client_id_env="CID",
        client_secret_env="CSEC",
        env={"CID": CLIENT_ID, "CSEC": CLIENT_SECRET},
    )


def revoked_sig(account_id: str, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
    return hmac.new(secret.encode(), f"{client_id}|{account_id}".encode(), hashlib.sha256).hexdigest()


def assert_refused(reason: str, fn: Any, *args: Any, **kw: Any) -> None:
    with pytest.raises(Unauthorized) as info:
        fn(*args, **kw)
    assert info.value.reason == reason
    assert info.value.status == 401
    assert "WWW-Authenticate" not in info.value.headers


# --- the shared vectors, verified or rejected as marked --------------------------------------------


@pytest.mark.parametrize(
    "case", VECTORS["standard_webhooks"], ids=lambda c: c.get("comment", c["webhook-id"])
)
def test_standard_webhooks_vectors(case: dict[str, Any]) -> None:
    v = make_verifier(type="standard_webhooks", secret_env="SW", env={"SW": case["secret"]})
    headers = [
        (b"webhook-id", case["webhook-id"].encode()),
        (b"webhook-timestamp", case["webhook-timestamp"].encode()),
        (b"webhook-signature", case["webhook-signature"].encode()),
    ]
    kwargs = {"headers": headers, "body": case["body"].encode(), "now": float(case["webhook-timestamp"])}
    if case["valid"]:
        assert call(v, **kwargs) == case["webhook-id"]
    else:
        assert_refused("webhook.bad_signature", call, v, **kwargs)


@pytest.mark.parametrize("case", VECTORS["github"], ids=lambda c: "github")
def test_github_vector(case: dict[str, Any]) -> None:
    v = make_verifier(
        type="hmac",
        secret_env="GH",
        header="X-Hub-Signature-256",
        algorithm="sha256",
        encoding="hex",
        prefix="sha256=",
        env={"GH": case["secret"]},
    )
    headers = [(b"x-hub-signature-256", case["X-Hub-Signature-256"].encode())]
    assert case["valid"]
    assert call(v, headers=headers, body=case["body"].encode()) is None


@pytest.mark.parametrize("case", VECTORS["kommo_chat"], ids=lambda c: "kommo_chat")
def test_kommo_chat_vector(case: dict[str, Any]) -> None:
    v = make_verifier(
        type="hmac",
        secret_env="CHAT",
        header="X-Signature",
        algorithm="sha1",
        encoding="hex",
        env={"CHAT": case["secret"]},
    )
    assert case["valid"]
    assert (
        call(v, headers=[(b"x-signature", case["X-Signature"].encode())], body=case["body"].encode()) is None
    )


@pytest.mark.parametrize("case", VECTORS["kommo_revoked"], ids=lambda c: "kommo_revoked")
def test_kommo_revoked_vector(case: dict[str, Any]) -> None:
    v = make_verifier(
        type="kommo_revoked",
        client_id_env="CID",
        client_secret_env="CSEC",
        env={"CID": case["client_id"], "CSEC": case["client_secret"]},
    )
    query = "&".join(f"{k}={val}" for k, val in case["query"].items())
    assert case["valid"]
    assert call(v, query=query) == f"revoked:{case['account_id']}"


# --- standard_webhooks ------------------------------------------------------------------------------

TS = 1_700_000_000
BODY = b'{"event":"lead.updated","id":42}'


def test_standard_webhooks_tolerance_boundary_accepted() -> None:
    v = sw_verifier()
    headers = sw_headers("msg_1", TS, sw_sign("msg_1", TS, BODY))
    assert call(v, headers=headers, body=BODY, now=TS + 300) == "msg_1"
    assert call(v, headers=headers, body=BODY, now=TS - 300) == "msg_1"


def test_standard_webhooks_rotation_second_signature_matches() -> None:
    old = hmac.new(b"old-key-0123456789", f"msg_1.{TS}.".encode() + BODY, hashlib.sha256).digest()
    sig = b"v1," + base64.b64encode(old) + b" v1a,xyz v1," + sw_sign("msg_1", TS, BODY)[3:]
    assert call(sw_verifier(), headers=sw_headers("msg_1", TS, sig), body=BODY, now=TS) == "msg_1"


def _sw(now: float = TS, **override: bytes | None) -> dict[str, Any]:
    fields: dict[str, bytes | None] = {
        "webhook-id": b"msg_1",
        "webhook-timestamp": str(TS).encode(),
        "webhook-signature": sw_sign("msg_1", TS, BODY),
    }
    fields.update({k.replace("_", "-"): v for k, v in override.items()})
    headers = [(k.encode(), v) for k, v in fields.items() if v is not None]
    return {"headers": headers, "body": BODY, "now": now}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        pytest.param({**_sw(), "body": BODY + b" "}, "webhook.bad_signature", id="tampered_body"),
        pytest.param({**_sw(), "body": b""}, "webhook.bad_signature", id="empty_body"),
        pytest.param(
            _sw(webhook_signature=sw_sign("msg_1", TS, BODY, key=b"another-key-123456")),
            "webhook.bad_signature",
            id="wrong_secret",
        ),
        pytest.param(_sw(webhook_signature=None), "webhook.bad_signature", id="missing_signature"),
        pytest.param(_sw(webhook_id=None), "webhook.bad_signature", id="missing_id"),
        pytest.param(_sw(webhook_id=b""), "webhook.bad_signature", id="empty_id"),
        pytest.param(_sw(webhook_timestamp=None), "webhook.bad_signature", id="missing_timestamp"),
        pytest.param(_sw(webhook_id=b"msg_2"), "webhook.bad_signature", id="id_swapped"),
        pytest.param(_sw(webhook_timestamp=str(TS + 1).encode()), "webhook.bad_signature", id="ts_swapped"),
        pytest.param(_sw(webhook_timestamp=b"17e8"), "webhook.bad_signature", id="ts_not_integer"),
        pytest.param(_sw(webhook_timestamp=b"-1"), "webhook.bad_signature", id="ts_negative"),
        pytest.param(_sw(webhook_timestamp=b"9" * 40), "webhook.bad_signature", id="ts_huge"),
        pytest.param(
            _sw(webhook_signature=b"v2," + sw_sign("msg_1", TS, BODY)[3:]),
            "webhook.bad_signature",
            id="only_unknown_version",
        ),
        pytest.param(
            _sw(webhook_signature=b"v1,!!!not-base64!!!"), "webhook.bad_signature", id="sig_not_b64"
        ),
        pytest.param(_sw(webhook_signature=b"v1,"), "webhook.bad_signature", id="sig_empty"),
        pytest.param(_sw(webhook_signature=b"\xff\xfe garbage"), "webhook.bad_signature", id="sig_binary"),
        pytest.param(_sw(webhook_id=b"\xff\xfe"), "webhook.bad_signature", id="id_binary_unsigned"),
        pytest.param(_sw(now=TS + 301), "webhook.stale", id="stale_past"),
        pytest.param(_sw(now=TS - 301), "webhook.stale", id="stale_future"),
        pytest.param(_sw(now=TS + 86400 * 365), "webhook.stale", id="replay_a_year_later"),
    ],
)
def test_standard_webhooks_refusals(kwargs: dict[str, Any], reason: str) -> None:
    assert_refused(reason, call, sw_verifier(), **kwargs)


def test_standard_webhooks_repeated_header_is_ambiguous() -> None:
    kwargs = _sw()
    kwargs["headers"].append((b"webhook-signature", b"v1,AAAA"))
    assert_refused("webhook.bad_signature", call, sw_verifier(), **kwargs)


def test_standard_webhooks_non_ascii_id_signed_refused_cleanly() -> None:
    msg_id = "msg_é".encode()
    sig = b"v1," + base64.b64encode(
        hmac.new(SW_KEY, msg_id + f".{TS}.".encode() + BODY, hashlib.sha256).digest()
    )
    headers = [(b"webhook-id", msg_id), (b"webhook-timestamp", str(TS).encode()), (b"webhook-signature", sig)]
    assert_refused("webhook.bad_signature", call, sw_verifier(), headers=headers, body=BODY, now=TS)


def test_standard_webhooks_rotation_any_match_passes_whatever_the_order() -> None:
    good = sw_sign("msg_1", TS, BODY)
    old = b"v1," + base64.b64encode(hmac.new(b"old-key-0123456789", b"msg_1.%d." % TS + BODY, hashlib.sha256).digest())
    for sig in (good + b" " + old, old + b" " + good, b"v1,!!!not-base64!!! " + good, good + b" v1,!!!"):
        assert call(sw_verifier(), headers=sw_headers("msg_1", TS, sig), body=BODY, now=TS) == "msg_1"


def test_standard_webhooks_signature_with_stray_characters_is_refused() -> None:
    b64 = sw_sign("msg_1", TS, BODY)[3:]
    for sig in (b"v1,*" + b64, b"v1," + b64[:8] + b"!" + b64[8:], b"v1," + b64 + b"\x00"):
        assert_refused("webhook.bad_signature", call, sw_verifier(), **_sw(webhook_signature=sig))


def _sw_signed_stamp(stamp: bytes) -> dict[str, Any]:
    """A delivery genuinely signed over `stamp`, exactly as the header carries it."""
    mac = hmac.new(SW_KEY, b"msg_1." + stamp + b"." + BODY, hashlib.sha256).digest()
    return _sw(webhook_timestamp=stamp, webhook_signature=b"v1," + base64.b64encode(mac))


@pytest.mark.parametrize(
    ("stamp", "now"),
    [
        pytest.param(b"+" + str(TS).encode(), TS, id="plus_sign"),
        pytest.param(b"-" + str(TS).encode(), TS, id="minus_sign"),
        pytest.param(str(TS).encode() + b".0", TS, id="decimal"),
        pytest.param(b"1_700_000_000", TS, id="underscores"),
        pytest.param(b"0x6553f100", TS, id="hex"),
        pytest.param(b"1" * 13, int(b"1" * 13), id="thirteen_digits"),
    ],
)
def test_standard_webhooks_signed_but_malformed_timestamp_is_refused(stamp: bytes, now: int) -> None:
    # The signature is genuine and `now` matches it, so only the timestamp check can refuse it.
    with pytest.raises(Unauthorized) as info:
        call(sw_verifier(), **{**_sw_signed_stamp(stamp), "now": float(now)})
    assert info.value.reason == "webhook.bad_signature"
    assert "malformed webhook-timestamp header" in info.value.detail


def test_standard_webhooks_twelve_digit_timestamp_is_well_formed() -> None:
    stamp = b"9" * 12
    kwargs = _sw_signed_stamp(stamp)
    assert call(sw_verifier(), **{**kwargs, "now": float(int(stamp))}) == "msg_1"
    # Well-formed but far from now: stale, not malformed.
    assert_refused("webhook.stale", call, sw_verifier(), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "reason", "detail"),
    [
        pytest.param(
            _sw(webhook_id=None),
            "webhook.bad_signature",
            "missing webhook-id, webhook-timestamp or webhook-signature header",
            id="missing",
        ),
        pytest.param(
            _sw(webhook_timestamp=b"17e8"), "webhook.bad_signature", "malformed webhook-timestamp header", id="ts"
        ),
        pytest.param({**_sw(), "body": b""}, "webhook.bad_signature", "signature does not match", id="mismatch"),
        pytest.param(_sw(now=TS + 301), "webhook.stale", "outside the accepted window", id="stale"),
    ],
)
def test_standard_webhooks_refusal_names_the_cause(kwargs: dict[str, Any], reason: str, detail: str) -> None:
    with pytest.raises(Unauthorized) as info:
        call(sw_verifier(), **kwargs)
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_standard_webhooks_non_ascii_id_detail() -> None:
    msg_id = "msg_é".encode()
    mac = hmac.new(SW_KEY, msg_id + f".{TS}.".encode() + BODY, hashlib.sha256).digest()
    headers = sw_headers("x", TS, b"v1," + base64.b64encode(mac))
    headers[0] = (b"webhook-id", msg_id)
    with pytest.raises(Unauthorized) as info:
        call(sw_verifier(), headers=headers, body=BODY, now=TS)
    assert "malformed webhook-id header" in info.value.detail


def test_standard_webhooks_secret_without_whsec_prefix() -> None:
    v = make_verifier(type="standard_webhooks", secret_env="SW", env={"SW": SW_SECRET.removeprefix("whsec_")})
    assert call(v, **_sw()) == "msg_1"
    assert_refused("webhook.bad_signature", call, v, **_sw(webhook_signature=sw_sign("msg_1", TS, BODY, b"k" * 24)))


# --- hmac -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param([(b"x-signature", chat_sig(BODY))], BODY + b"x", id="tampered_body"),
        pytest.param([(b"x-signature", chat_sig(BODY))], b"", id="empty_body"),
        pytest.param([(b"x-signature", chat_sig(BODY, "wrong-secret-0123456789"))], BODY, id="wrong_secret"),
        pytest.param([], BODY, id="missing_header"),
        pytest.param([(b"x-signature-2", chat_sig(BODY))], BODY, id="other_header_name"),
        pytest.param([(b"x-signature", b"")], BODY, id="empty_header"),
        pytest.param([(b"x-signature", b"zz" * 20)], BODY, id="not_hex"),
        pytest.param([(b"x-signature", chat_sig(BODY)[:-2])], BODY, id="truncated"),
        pytest.param([(b"x-signature", b"sha1=" + chat_sig(BODY))], BODY, id="unexpected_prefix"),
        pytest.param([(b"x-signature", b"\xff\xfe\xfd")], BODY, id="binary_header"),
        pytest.param(
            [(b"x-signature", chat_sig(BODY)), (b"x-signature", chat_sig(BODY))], BODY, id="repeated_header"
        ),
    ],
)
def test_hmac_refusals(headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    assert_refused("webhook.bad_signature", call, chat_verifier(), headers=headers, body=body)


def test_hmac_uppercase_hex_and_whitespace_accepted() -> None:
    sig = b" " + chat_sig(BODY).upper() + b" "
    assert call(chat_verifier(), headers=[(b"x-signature", sig)], body=BODY) is None


def test_hmac_empty_body_signed_is_accepted() -> None:
    assert call(chat_verifier(), headers=[(b"x-signature", chat_sig(b""))], body=b"") is None


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_hmac_base64_with_prefix(algorithm: str) -> None:
    v = make_verifier(
        type="hmac",
        secret_env="S",
        header="X-Sig",
        algorithm=algorithm,
        encoding="base64",
        prefix="v0=",
        env={"S": "base64-secret-0123456789"},
    )
    mac = base64.b64encode(hmac.new(b"base64-secret-0123456789", BODY, algorithm).digest())
    assert call(v, headers=[(b"x-sig", b"v0=" + mac)], body=BODY) is None
    assert_refused("webhook.bad_signature", call, v, headers=[(b"x-sig", b"v0=" + mac[:-4])], body=BODY)
    assert_refused("webhook.bad_signature", call, v, headers=[(b"x-sig", mac)], body=BODY)


def b64_verifier() -> Verifier:
    return make_verifier(
        type="hmac",
        secret_env="S",
        header="X-Sig",
        algorithm="sha256",
        encoding="base64",
        prefix="v0=",
        env={"S": "base64-secret-0123456789"},
    )


def test_hmac_base64_with_stray_characters_is_refused() -> None:
    mac = base64.b64encode(hmac.new(b"base64-secret-0123456789", BODY, "sha256").digest())
    assert call(b64_verifier(), headers=[(b"x-sig", b"v0=" + mac)], body=BODY) is None
    for bad in (b"v0=*" + mac, b"v0=" + mac[:10] + b"!" + mac[10:], b"v0=" + mac[:10] + b" " + mac[10:]):
        assert_refused("webhook.bad_signature", call, b64_verifier(), headers=[(b"x-sig", bad)], body=BODY)


@pytest.mark.parametrize(
    ("verifier", "headers", "detail"),
    [
        pytest.param(chat_verifier, [], "missing X-Signature header", id="missing"),
        pytest.param(chat_verifier, [(b"x-signature", b"zz")], "malformed X-Signature header", id="not_hex"),
        pytest.param(b64_verifier, [(b"x-sig", b"sha256=AAAA")], "malformed X-Sig header", id="wrong_prefix"),
        pytest.param(chat_verifier, [(b"x-signature", chat_sig(b"other"))], "signature does not match", id="mismatch"),
        pytest.param(
            chat_verifier,
            [(b"x-signature", chat_sig(BODY)), (b"x-signature", chat_sig(BODY))],
            "x-signature header repeated",
            id="repeated",
        ),
    ],
)
def test_hmac_refusal_names_the_cause(verifier: Callable[[], Verifier], headers: list[tuple[bytes, bytes]], detail: str) -> None:
    with pytest.raises(Unauthorized) as info:
        call(verifier(), headers=headers, body=BODY)
    assert info.value.reason == "webhook.bad_signature"
    assert detail in info.value.detail


# --- url_token --------------------------------------------------------------------------------------


def test_url_token_accepted() -> None:
    assert call(token_verifier(), path_params={"token": URL_TOKEN}, body=b"leads[add][0][id]=1") is None


def _one_char_off(token: str, i: int) -> str:
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


@pytest.mark.parametrize(
    "path_params",
    [
        pytest.param({"token": _one_char_off(URL_TOKEN, 0)}, id="first_char_differs"),
        pytest.param({"token": _one_char_off(URL_TOKEN, len(URL_TOKEN) - 1)}, id="last_char_differs"),
        pytest.param({"token": URL_TOKEN[:-1]}, id="prefix_of_token"),
        pytest.param({"token": URL_TOKEN + "x"}, id="token_plus_one"),
        pytest.param({"token": ""}, id="empty"),
        pytest.param({"token": URL_TOKEN.upper()}, id="case_differs"),
        pytest.param({"other": URL_TOKEN}, id="wrong_param"),
        pytest.param({}, id="missing_param"),
        pytest.param({"token": "\udcff"}, id="lone_surrogate"),
    ],
)
def test_url_token_refusals(path_params: dict[str, str]) -> None:
    assert_refused("webhook.bad_signature", call, token_verifier(), path_params=path_params, body=b"x=1")


def test_url_token_refusal_names_the_cause() -> None:
    with pytest.raises(Unauthorized) as info:
        call(token_verifier(), path_params={"token": URL_TOKEN + "x"})
    assert "webhook token does not match" in info.value.detail


def test_url_token_may_use_every_url_safe_character() -> None:
    token = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    v = make_verifier(type="url_token", secret_env="TOK", param="token", env={"TOK": token})
    assert call(v, path_params={"token": token}) is None
    assert_refused("webhook.bad_signature", call, v, path_params={"token": token[::-1]})


# --- kommo_revoked ----------------------------------------------------------------------------------

ACC = "29371234"
GOOD_Q = f"client_uuid={CLIENT_ID}&account_id={ACC}&signature={revoked_sig(ACC)}"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(
            f"client_uuid={CLIENT_ID}&account_id=1{ACC}&signature={revoked_sig(ACC)}", id="other_account"
        ),
        pytest.param(
            f"client_uuid=99999999-2222-3333-4444-555555555555&account_id={ACC}"
            f"&signature={revoked_sig(ACC, '99999999-2222-3333-4444-555555555555')}",
            id="other_client_uuid",
        ),
        pytest.param(
            f"client_uuid={CLIENT_ID}&account_id={ACC}"
            f"&signature={revoked_sig(ACC, secret='wrong-secret-xyz123')}",
            id="wrong_secret",
        ),
        pytest.param(f"client_uuid={CLIENT_ID}&account_id={ACC}", id="missing_signature"),
        pytest.param(f"account_id={ACC}&signature={revoked_sig(ACC)}", id="missing_client_uuid"),
        pytest.param(f"client_uuid={CLIENT_ID}&signature={revoked_sig('')}&account_id=", id="empty_account"),
        pytest.param(GOOD_Q + f"&account_id=1{ACC}", id="repeated_account_id"),
        pytest.param(GOOD_Q + "&signature=00", id="repeated_signature"),
        pytest.param(GOOD_Q + f"&client_uuid={CLIENT_ID}", id="repeated_client_uuid"),
        pytest.param(f"client_uuid={CLIENT_ID}&account_id={ACC}&signature=xyz", id="signature_not_hex"),
        pytest.param(
            f"client_uuid={CLIENT_ID}&account_id={ACC}&signature={revoked_sig(ACC)[:-2]}", id="short_sig"
        ),
        pytest.param("&".join(["a=1"] * 100), id="too_many_fields"),
        pytest.param("", id="empty_query"),
    ],
)
def test_kommo_revoked_refusals(query: str) -> None:
    assert_refused("webhook.bad_signature", call, revoked_verifier(), query=query)


def test_kommo_revoked_ignores_unrelated_params() -> None:
    assert call(revoked_verifier(), query=GOOD_Q + "&utm=1") == f"revoked:{ACC}"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(GOOD_Q + "&account_id=", id="blank_repeated_account_id"),
        pytest.param(GOOD_Q + "&signature=", id="blank_repeated_signature"),
        pytest.param(GOOD_Q + "&client_uuid=", id="blank_repeated_client_uuid"),
        pytest.param("account_id=&" + GOOD_Q, id="blank_account_id_first"),
    ],
)
def test_kommo_revoked_blank_repeat_is_still_a_repeat(query: str) -> None:
    with pytest.raises(Unauthorized) as info:
        call(revoked_verifier(), query=query)
    assert info.value.reason == "webhook.bad_signature"
    assert "exactly once" in info.value.detail


def test_kommo_revoked_field_limit_boundary() -> None:
    # 32 fields parse; the 33rd makes the query malformed, even around a valid signature.
    padded = GOOD_Q + "".join(f"&utm{i}=1" for i in range(29))
    assert call(revoked_verifier(), query=padded) == f"revoked:{ACC}"
    with pytest.raises(Unauthorized) as info:
        call(revoked_verifier(), query=padded + "&utm=1")
    assert info.value.reason == "webhook.bad_signature"
    assert "malformed query string" in info.value.detail


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        pytest.param(f"client_uuid={CLIENT_ID}&account_id={ACC}", "exactly once", id="missing"),
        pytest.param(
            f"client_uuid=other&account_id={ACC}&signature={revoked_sig(ACC, 'other')}",
            "not signed for this integration",
            id="other_client",
        ),
        pytest.param(f"client_uuid={CLIENT_ID}&account_id={ACC}&signature=xyz", "malformed signature", id="not_hex"),
        pytest.param(
            f"client_uuid={CLIENT_ID}&account_id={ACC}&signature={revoked_sig('1')}",
            "signature does not match",
            id="mismatch",
        ),
    ],
)
def test_kommo_revoked_refusal_names_the_cause(query: str, detail: str) -> None:
    with pytest.raises(Unauthorized) as info:
        call(revoked_verifier(), query=query)
    assert info.value.reason == "webhook.bad_signature"
    assert detail in info.value.detail


# --- secrets at start-up ----------------------------------------------------------------------------

CFG_HMAC = {
    "type": "hmac",
    "secret_env": "KOMMO_CHANNEL_SECRET",
    "header": "X-Signature",
    "algorithm": "sha1",
    "encoding": "hex",
}
CFG_TOKEN = {"type": "url_token", "secret_env": "KOMMO_WEBHOOK_SECRET", "param": "token"}
CFG_SW = {"type": "standard_webhooks", "secret_env": "SW_SECRET"}
CFG_REVOKED = {
    "type": "kommo_revoked",
    "client_id_env": "KOMMO_CLIENT_ID",
    "client_secret_env": "KOMMO_CLIENT_SECRET",
}
STRONG = "s3cr3t-value-with-32-bytes-xxxxx"


@pytest.mark.parametrize(
    ("cfg", "env", "production", "variable", "message"),
    [
        pytest.param(CFG_HMAC, {}, False, "KOMMO_CHANNEL_SECRET", "unset or empty", id="unset"),
        pytest.param(
            CFG_HMAC, {"KOMMO_CHANNEL_SECRET": ""}, False, "KOMMO_CHANNEL_SECRET", "unset", id="empty"
        ),
        pytest.param(
            CFG_HMAC,
            {"KOMMO_CHANNEL_SECRET": "dev-only-channel-secret-0123456789"},
            True,
            "KOMMO_CHANNEL_SECRET",
            "development default",
            id="dev_default_in_production",
        ),
        pytest.param(
            CFG_HMAC,
            {"KOMMO_CHANNEL_SECRET": "short"},
            True,
            "KOMMO_CHANNEL_SECRET",
            "shorter than 16 bytes",
            id="short_in_production",
        ),
        pytest.param(CFG_TOKEN, {}, False, "KOMMO_WEBHOOK_SECRET", "unset", id="token_unset"),
        pytest.param(
            CFG_TOKEN,
            {"KOMMO_WEBHOOK_SECRET": "abc/def-0123456789"},
            False,
            "KOMMO_WEBHOOK_SECRET",
            "URL-safe",
            id="token_not_url_safe",
        ),
        pytest.param(CFG_SW, {"SW_SECRET": "whsec_###"}, False, "SW_SECRET", "whsec_", id="whsec_not_base64"),
        pytest.param(
            CFG_SW,
            {"SW_SECRET": "whsec_" + base64.b64encode(b"k" * 8).decode()},
            True,
            "SW_SECRET",
            "fewer than 16 bytes",
            id="whsec_short_key_in_production",
        ),
        pytest.param(
            CFG_SW,
            {"SW_SECRET": "whsec_" + base64.b64encode(b"k" * 15).decode()},
            True,
            "SW_SECRET",
            "decodes to fewer than 16 bytes; refused in production",
            id="whsec_15_byte_key_in_production",
        ),
        pytest.param(CFG_SW, {"SW_SECRET": "whsec_"}, False, "SW_SECRET", "decodes to an empty key", id="whsec_empty"),
        pytest.param(
            CFG_TOKEN,
            {"KOMMO_WEBHOOK_SECRET": "dev-only-token-0123456789abcdef"},
            True,
            "KOMMO_WEBHOOK_SECRET",
            "development default",
            id="token_dev_default_in_production",
        ),
        pytest.param(
            CFG_TOKEN,
            {"KOMMO_WEBHOOK_SECRET": "short-token"},
            True,
            "KOMMO_WEBHOOK_SECRET",
            "shorter than 16 bytes",
            id="token_short_in_production",
        ),
        pytest.param(
            CFG_REVOKED,
            {"KOMMO_CLIENT_ID": CLIENT_ID, "KOMMO_CLIENT_SECRET": "dev-only-client-secret-0123456789"},
            True,
            "KOMMO_CLIENT_SECRET",
            "development default",
            id="client_secret_dev_default_in_production",
        ),
        pytest.param(
            CFG_REVOKED,
            {"KOMMO_CLIENT_ID": CLIENT_ID, "KOMMO_CLIENT_SECRET": "short"},
            True,
            "KOMMO_CLIENT_SECRET",
            "shorter than 16 bytes",
            id="client_secret_short_in_production",
        ),
        pytest.param(
            CFG_SW,
            {"SW_SECRET": "dev-only-whsec"},
            True,
            "SW_SECRET",
            "development default",
            id="whsec_dev_default_in_production",
        ),
        pytest.param(
            CFG_REVOKED,
            {"KOMMO_CLIENT_SECRET": STRONG},
            False,
            "KOMMO_CLIENT_ID",
            "unset",
            id="client_id_unset",
        ),
        pytest.param(
            CFG_REVOKED,
            {"KOMMO_CLIENT_ID": CLIENT_ID},
            False,
            "KOMMO_CLIENT_SECRET",
            "unset",
            id="client_secret_unset",
        ),
    ],
)
def test_config_refused(
    cfg: dict[str, Any], env: dict[str, str], production: bool, variable: str, message: str
) -> None:
    with pytest.raises(WebhookConfigError, match=message) as info:
        compile_verifier(parse_webhook_config({**cfg, "source_ips": "any"}), env, production)
    assert info.value.variable == variable
    assert variable in str(info.value)


@pytest.mark.parametrize(
    ("cfg", "env"),
    [
        pytest.param(CFG_HMAC, {"KOMMO_CHANNEL_SECRET": "dev-only-channel"}, id="dev_default"),
        pytest.param(CFG_HMAC, {"KOMMO_CHANNEL_SECRET": "short"}, id="short"),
        pytest.param(CFG_TOKEN, {"KOMMO_WEBHOOK_SECRET": "dev-only-token"}, id="token_dev_default"),
    ],
)
def test_development_accepts_dev_defaults(cfg: dict[str, Any], env: dict[str, str]) -> None:
    verifier = compile_verifier(parse_webhook_config({**cfg, "source_ips": "any"}), env, production=False)
    assert verifier.scheme == cfg["type"]


def test_production_accepts_strong_secrets() -> None:
    env = {
        "KOMMO_CHANNEL_SECRET": STRONG,
        "KOMMO_WEBHOOK_SECRET": STRONG,
        "SW_SECRET": SW_SECRET,
        "KOMMO_CLIENT_ID": CLIENT_ID,
        "KOMMO_CLIENT_SECRET": STRONG,
    }
    for cfg in (CFG_HMAC, CFG_TOKEN, CFG_SW, CFG_REVOKED):
        verifier = compile_verifier(parse_webhook_config({**cfg, "source_ips": "any"}), env, production=True)
        assert verifier.scheme == cfg["type"]


def test_production_minimum_lengths_are_inclusive() -> None:
    env = {
        "KOMMO_CHANNEL_SECRET": "x" * 16,
        "KOMMO_WEBHOOK_SECRET": "t" * 16,
        "SW_SECRET": "whsec_" + base64.b64encode(b"k" * 16).decode(),
        "KOMMO_CLIENT_ID": CLIENT_ID,
        "KOMMO_CLIENT_SECRET": "c" * 16,
    }
    for cfg in (CFG_HMAC, CFG_TOKEN, CFG_SW, CFG_REVOKED):
        verifier = compile_verifier(parse_webhook_config({**cfg, "source_ips": "any"}), env, production=True)
        assert verifier.scheme == cfg["type"]


def test_unknown_config_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown webhook config object"):
        compile_verifier(object(), {}, False)  # type: ignore[arg-type]


def test_route_id_named_in_error() -> None:
    with pytest.raises(WebhookConfigError) as info:
        compile_webhook(
            parse_webhook_config({**CFG_HMAC, "source_ips": "any"}), {}, False, route_id="kommo-chat"
        )
    assert str(info.value).startswith("route kommo-chat: KOMMO_CHANNEL_SECRET")
    assert info.value.route_id == "kommo-chat"


@pytest.mark.parametrize(
    ("factory", "variable"),
    [
        pytest.param(token_verifier, "TOK", id="url_token"),
        pytest.param(chat_verifier, "CHAT", id="hmac"),
        pytest.param(sw_verifier, "SW", id="standard_webhooks"),
        pytest.param(revoked_verifier, "CSEC", id="kommo_revoked"),
    ],
)
def test_repr_and_errors_never_show_secrets(factory: Callable[[], Verifier], variable: str) -> None:
    # Built inside the test, not at collection, so the compiled verifier is the code under test.
    verifier = factory()
    text = repr(verifier)
    # The repr names the variable an operator must look at, never its value.
    assert f"secret=${variable})" in text
    for secret in (URL_TOKEN, CHAT_SECRET, SW_SECRET, SW_SECRET[6:], CLIENT_SECRET):
        assert secret not in text
    with pytest.raises(Unauthorized) as info:
        call(
            verifier,
            headers=[(b"x-signature", chat_sig(BODY))],
            path_params={"token": URL_TOKEN + "x"},
            body=BODY + b"tampered",
            query=GOOD_Q + "&signature=1",
        )
    assert chat_sig(BODY).decode() not in info.value.detail
    assert URL_TOKEN not in info.value.detail
