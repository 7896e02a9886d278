"""CORS: origin families scanners (CORScanner) try, load-time refusals, preflight and merge."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.cors import CorsMatcher, CorsOverride, CorsPolicy, compile_cors, load_cors
from gateway.errors import Forbidden

SHIPPED = {
    "allow_origins": ["https://app.example.com", "https://admin.example.com"],
    "allow_credentials": True,
    "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
    "allow_headers": ["Authorization", "Content-Type"],
}
VARY_ONLY = [(b"vary", b"Origin")]


def make_matcher(**over: Any) -> CorsMatcher:
    return compile_cors(load_cors({**SHIPPED, **over}))


EXACT = make_matcher()
WILD = make_matcher(allow_origins=["https://*.example.com"])

# Origin families a scanner tries against https://app.example.com (exact) / https://*.example.com.
HOSTILE = [
    pytest.param(b"https://evil.com", id="reflected_arbitrary"),
    pytest.param(b"https://app.example.com.evil.net", id="prefix_match"),
    pytest.param(b"https://example.com.evil.net", id="prefix_match_apex"),
    pytest.param(b"https://evilexample.com", id="suffix_no_dot"),
    pytest.param(b"https://evil-example.com", id="suffix_hyphen"),
    pytest.param(b"null", id="null"),
    pytest.param(b"https://app.example.com_.evil.net", id="special_underscore"),
    pytest.param(b"https://evil.com%60.app.example.com", id="special_backtick_encoded"),
    pytest.param(b"https://evil.com`.app.example.com", id="special_backtick"),
    pytest.param(b"https://app.example.com!.evil.net", id="special_bang"),
    pytest.param(b"https://app.example.com&.evil.net", id="special_amp"),
    pytest.param(b"https://app.example.com'.evil.net", id="special_quote"),
    pytest.param(b"https://app.example.com\x00.evil.net", id="special_nul"),
    pytest.param(b"https://app.example.com..evil.net", id="empty_label"),
    pytest.param(b"https://a..example.com", id="empty_label_inside_wild"),
    pytest.param(b"ftp://a.example.com:8443", id="other_scheme_with_port"),
    pytest.param(b"http://app.example.com", id="http_for_https"),
    pytest.param(b"http://a.example.com", id="http_for_https_wild"),
    pytest.param(b"https://app.example.com.", id="trailing_dot"),
    pytest.param(b"https://a.example.com.", id="trailing_dot_wild"),
    pytest.param(b"https://app.example.com@evil.net", id="userinfo_after"),
    pytest.param(b"https://evil.net@a.example.com", id="userinfo_before"),
    pytest.param(b"https://APP.EXAMPLE.COM", id="uppercase_host"),
    pytest.param(b"HTTPS://app.example.com", id="uppercase_scheme"),
    pytest.param(b"https://A.example.com", id="uppercase_wild"),
    pytest.param(b"https://app.example.com:443", id="explicit_default_port"),
    pytest.param(b"https://a.example.com:443", id="explicit_default_port_wild"),
    pytest.param(b"https://app.example.com:8443", id="other_port"),
    pytest.param(b"https://a.example.com:8443", id="other_port_wild"),
    pytest.param(b"https://app.example.com:", id="empty_port"),
    pytest.param(b"https://a.example.com:0443", id="zero_padded_port"),
    pytest.param(b"https://app.example.com/", id="trailing_slash"),
    pytest.param(b"https://a.example.com/x", id="path"),
    pytest.param(b" https://app.example.com", id="leading_space"),
    pytest.param(b"https://app.example.com ", id="trailing_space"),
    pytest.param(b"https://example.com", id="apex_not_listed"),
    pytest.param(b"https://.example.com", id="empty_leftmost_label"),
    pytest.param(b"file://", id="file"),
    pytest.param(b"", id="empty"),
    pytest.param(b"https://" + b"a." * 200 + b"example.com", id="overlong"),
]


@pytest.mark.parametrize("matcher", [EXACT, WILD], ids=["exact", "wildcard"])
@pytest.mark.parametrize("origin", HOSTILE)
def test_hostile_origin_gets_no_allow_header(matcher: CorsMatcher, origin: bytes) -> None:
    assert matcher.origin_allowed(origin) is False
    assert matcher.actual_headers(origin) == VARY_ONLY
    with pytest.raises(Forbidden) as exc:
        matcher.preflight(origin, b"GET", None)
    assert exc.value.reason == "cors.origin_denied"
    assert exc.value.status == 403
    assert exc.value.detail == "origin not allowed"
    assert exc.value.headers == {"Vary": "Origin"}
    assert "Access-Control-Allow-Origin" not in exc.value.headers


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(b"https://evil.app.example.com", id="evil_subdomain_of_exact"),
        pytest.param(b"https://evilapp.example.com", id="suffix_of_exact"),
        pytest.param(b"https://pp.example.com", id="shorter"),
    ],
)
def test_exact_entry_is_not_a_suffix(origin: bytes) -> None:
    assert EXACT.actual_headers(origin) == VARY_ONLY


def test_allowed_origin_echoed_exactly_with_credentials_and_exposed() -> None:
    headers = dict(EXACT.actual_headers(b"https://admin.example.com"))
    assert headers[b"vary"] == b"Origin"
    assert headers[b"access-control-allow-origin"] == b"https://admin.example.com"
    assert headers[b"access-control-allow-credentials"] == b"true"
    exposed = headers[b"access-control-expose-headers"].split(b", ")
    assert exposed == [b"X-Request-ID", b"RateLimit", b"RateLimit-Policy", b"Retry-After"]


def test_no_origin_still_varies() -> None:
    assert EXACT.actual_headers(None) == VARY_ONLY


@pytest.mark.parametrize(
    "origin, allowed",
    [
        (b"https://a.example.com", True),
        (b"https://a.b.example.com", True),
        (b"https://xn--bcher-kva.example.com", True),
        (b"https://example.com", False),
        (b"https://a.example.com.evil.net", False),
    ],
)
def test_wildcard_matches_whole_labels(origin: bytes, allowed: bool) -> None:
    assert WILD.origin_allowed(origin) is allowed


def test_wildcard_with_port() -> None:
    m = make_matcher(allow_origins=["https://*.example.com:8443"])
    assert m.origin_allowed(b"https://a.example.com:8443")
    assert not m.origin_allowed(b"https://a.example.com")
    assert not m.origin_allowed(b"https://a.example.com:9443")


def test_http_wildcard() -> None:
    m = make_matcher(allow_origins=["http://*.example.com"])
    assert m.origin_allowed(b"http://a.example.com")
    assert not m.origin_allowed(b"https://a.example.com")
    assert not m.origin_allowed(b"http://a.example.com:80")


def test_star_without_credentials_answers_star() -> None:
    m = make_matcher(allow_origins=["*"], allow_credentials=False)
    headers = dict(m.actual_headers(b"https://anything.test"))
    assert headers[b"access-control-allow-origin"] == b"*"
    assert b"access-control-allow-credentials" not in headers


@pytest.mark.parametrize(
    "given, stored",
    [
        ("HTTPS://App.Example.COM:443", "https://app.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("https://app.example.com:8443", "https://app.example.com:8443"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ("https://*.Example.com", "https://*.example.com"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("https://app.example.com:1", "https://app.example.com:1"),
        ("https://app.example.com:65535", "https://app.example.com:65535"),
    ],
)
def test_origins_normalised_at_load(given: str, stored: str) -> None:
    policy = load_cors({**SHIPPED, "allow_origins": [given]})
    assert policy.allow_origins == [stored]
    assert compile_cors(policy).origin_allowed(stored.encode()) or "*" in stored


def test_comma_separated_string_of_origins() -> None:
    # `allow_origins: ${GATEWAY_CORS_ORIGINS}` expands to one string; blanks and a trailing comma are dropped.
    policy = load_cors({**SHIPPED, "allow_origins": " https://a.example.com ,, https://b.example.com, "})
    assert policy.allow_origins == ["https://a.example.com", "https://b.example.com"]


def test_star_entry_is_trimmed_and_origins_deduplicated_after_normalising() -> None:
    star = load_cors({**SHIPPED, "allow_origins": [" * "], "allow_credentials": False})
    assert star.allow_origins == ["*"]
    assert compile_cors(star).origin_allowed(b"https://anything.test")
    same = load_cors({**SHIPPED, "allow_origins": ["https://app.example.com", "HTTPS://App.example.com:443"]})
    assert same.allow_origins == ["https://app.example.com"]


REFUSED = [
    pytest.param(
        {"allow_origins": ["*"], "allow_credentials": True}, "allow_credentials", id="star_with_credentials"
    ),
    pytest.param({"allow_origins": ["*", "https://a.com"]}, "only entry", id="star_mixed"),
    pytest.param({"allow_origins": ["null"]}, '"null" is not an allowable origin', id="null"),
    pytest.param({"allow_origins": [".*"]}, "regular expression", id="dot_star"),
    pytest.param(
        {"allow_origins": ["^https://app\\.example\\.com$"]}, "regular expression", id="anchored_regex"
    ),
    pytest.param({"allow_origins": ["https://app.example.com$"]}, "regular expression", id="dollar"),
    pytest.param(
        {"allow_origins": ["https://(app|admin).example.com"]}, "regular expression", id="alternation"
    ),
    pytest.param({"allow_origins": ["*example.com"]}, "http(s)://", id="unanchored_no_scheme"),
    pytest.param({"allow_origins": ["https://*example.com"]}, "leftmost label", id="partial_label_wildcard"),
    pytest.param({"allow_origins": ["https://*"]}, "registrable", id="bare_wildcard"),
    pytest.param({"allow_origins": ["https://*.com"]}, "registrable", id="tld_wildcard"),
    pytest.param({"allow_origins": ["https://a.*.example.com"]}, "leftmost label", id="inner_wildcard"),
    pytest.param({"allow_origins": ["https://*.*.example.com"]}, "leftmost label", id="double_wildcard"),
    pytest.param({"allow_origins": ["https://**.example.com"]}, "leftmost label", id="star_star"),
    pytest.param({"allow_origins": ["*.example.com"]}, "http(s)://", id="wildcard_no_scheme"),
    pytest.param({"allow_origins": ["https://app.example.com/"]}, "no path", id="trailing_slash"),
    pytest.param({"allow_origins": ["https://app.example.com/x"]}, "no path", id="path"),
    pytest.param({"allow_origins": ["https://app.example.com?a=1"]}, "no path", id="query"),
    pytest.param({"allow_origins": ["https://app.example.com#f"]}, "no path", id="fragment"),
    pytest.param({"allow_origins": ["https://u:p@app.example.com"]}, "userinfo", id="userinfo"),
    pytest.param({"allow_origins": ["ftp://app.example.com"]}, "http(s)://", id="ftp"),
    pytest.param({"allow_origins": ["app.example.com"]}, "http(s)://", id="no_scheme"),
    pytest.param({"allow_origins": ["https://app.example.com:99999"]}, "bad port", id="port_range"),
    pytest.param({"allow_origins": ["https://app.example.com:65536"]}, "bad port", id="port_65536"),
    pytest.param({"allow_origins": ["https://app.example.com:"]}, "bad port", id="empty_port"),
    pytest.param({"allow_origins": ["https://app.example.com:08443"]}, "bad port", id="padded_port"),
    pytest.param({"allow_origins": ["https://app.example.com:\u00b2"]}, "internationalised", id="superscript_port"),
    pytest.param({"allow_origins": ["https://bücher.example"]}, "punycode", id="unicode_idn"),
    pytest.param({"allow_origins": ["https://app..example.com"]}, "bad host", id="empty_label"),
    pytest.param({"allow_origins": ["https://app.example.com."]}, "bad host", id="trailing_dot"),
    pytest.param({"allow_origins": ["https://-app.example.com"]}, "bad host", id="leading_hyphen"),
    pytest.param({"allow_origins": ["https://app-.example.com"]}, "bad host", id="trailing_hyphen"),
    pytest.param({"allow_origins": ["https://app_1.example.com"]}, "bad host", id="underscore"),
    pytest.param({"allow_origins": ["https://[::1]"]}, "bad host", id="ipv6_unsupported"),
    pytest.param({"allow_methods": ["*"]}, "explicitly", id="methods_star"),
    pytest.param({"allow_headers": ["*"]}, "explicitly", id="headers_star"),
    pytest.param({"allow_headers": ["X Evil"]}, "'X Evil' is not a valid allow_header name", id="header_space"),
    pytest.param({"max_age": -1}, "greater than", id="negative_max_age"),
    pytest.param({"allow_origin": ["https://a.com"]}, "Extra inputs", id="typo_field"),
]


@pytest.mark.parametrize("fields, message", REFUSED)
def test_refused_at_load(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        load_cors({**SHIPPED, **fields})
    assert message in str(exc.value)


def test_http_refused_in_production_only() -> None:
    data = {**SHIPPED, "allow_origins": ["http://app.example.com"]}
    assert load_cors(data).allow_origins == ["http://app.example.com"]
    with pytest.raises(ValidationError, match="refused in production"):
        load_cors(data, production=True)
    with pytest.raises(ValidationError, match="refused in production"):
        CorsOverride.model_validate({"allow_origins": ["http://a.example.com"]}, context={"production": True})


def test_production_refuses_http_origins() -> None:
    # A real (non-placeholder) host, so only the http:// rule can refuse it.
    with pytest.raises(ValidationError, match="http:// origins are refused in production"):
        load_cors({**SHIPPED, "allow_origins": ["http://app.acme.io"]}, production=True)


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "https://example.org",
        "https://*.example.net",
        "https://example",
        "https://localhost:3000",
        "https://dev.test",
        "https://x.invalid",
        "https://127.0.0.1",
        "https://127.0.0.2",
        "https://0.0.0.0",
        "https://*.127.0.0.1",
    ],
)
def test_production_refuses_placeholder_origins(origin: str) -> None:
    data = {**SHIPPED, "allow_origins": [origin]}
    assert load_cors(data).allow_origins == [origin]
    with pytest.raises(ValidationError, match="example / local origins are refused in production"):
        load_cors(data, production=True)


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.acme.io",
        "https://*.acme.io",
        "https://notexample.com",
        "https://example.com.acme.io",
        "https://localhost.acme.io",
        "https://10.0.0.1",
    ],
)
def test_production_accepts_real_https_origins(origin: str) -> None:
    policy = load_cors({**SHIPPED, "allow_origins": [origin]}, production=True)
    assert policy.allow_origins == [origin]


def test_methods_upper_cased_and_names_deduplicated_case_insensitively() -> None:
    policy = load_cors(
        {
            **SHIPPED,
            "allow_methods": ["get", "Patch", "GET"],
            "allow_headers": ["Authorization", "authorization", "X-A"],
            "expose_headers": ["X-Total", "x-total"],
        }
    )
    assert policy.allow_methods == ["GET", "PATCH"]
    assert policy.allow_headers == ["Authorization", "X-A"]
    assert policy.expose_headers == ["X-Total"]


def test_origin_length_limit() -> None:
    at_limit = b"https://" + b"a" * 280 + b".example.com"
    assert len(at_limit) == 300
    assert WILD.origin_allowed(at_limit)
    assert not WILD.origin_allowed(b"https://a" + at_limit[8:])


def test_preflight_allowed() -> None:
    headers = EXACT.preflight(b"https://app.example.com", b"PATCH", b"authorization, Content-Type")
    got = dict(headers)
    assert got[b"access-control-allow-origin"] == b"https://app.example.com"
    assert got[b"access-control-allow-methods"] == b"GET, POST, PATCH, DELETE"
    assert got[b"access-control-allow-headers"] == b"Authorization, Content-Type"
    assert got[b"access-control-max-age"] == b"600"
    assert got[b"access-control-allow-credentials"] == b"true"
    assert got[b"vary"] == b"Origin"


@pytest.mark.parametrize(
    "method, req_headers, reason",
    [
        pytest.param(b"PUT", None, "cors.method_denied", id="method_not_listed"),
        pytest.param(b"patch", None, "cors.method_denied", id="lowercase_custom_method"),
        pytest.param(b"", None, "cors.method_denied", id="no_method"),
        pytest.param(b"GET", b"authorization, x-evil", "cors.header_denied", id="header_not_listed"),
        pytest.param(b"GET", b"cookie", "cors.header_denied", id="cookie_header"),
    ],
)
def test_preflight_refused(method: bytes, req_headers: bytes | None, reason: str) -> None:
    with pytest.raises(Forbidden) as exc:
        EXACT.preflight(b"https://app.example.com", method, req_headers)
    assert exc.value.reason == reason
    assert exc.value.detail == {
        "cors.method_denied": "method not allowed by CORS policy",
        "cors.header_denied": "request header not allowed by CORS policy",
    }[reason]
    assert exc.value.headers == {"Vary": "Origin"}


def test_preflight_without_credentials_has_no_credentials_header() -> None:
    m = make_matcher(allow_credentials=False)
    assert b"access-control-allow-credentials" not in dict(
        m.preflight(b"https://app.example.com", b"GET", b"")
    )


def test_expose_headers_deduplicated_case_insensitively() -> None:
    m = make_matcher(expose_headers=["x-request-id", "X-Total-Count"])
    exposed = dict(m.actual_headers(b"https://app.example.com"))[b"access-control-expose-headers"]
    assert exposed == b"x-request-id, X-Total-Count, RateLimit, RateLimit-Policy, Retry-After"


def test_route_override_replaces_only_fields_it_sets() -> None:
    base = load_cors(SHIPPED)
    override = CorsOverride.model_validate({"allow_origins": ["https://partner.example.net"], "max_age": 60})
    merged = base.merged(override)
    assert merged.allow_origins == ["https://partner.example.net"]  # replaced, not unioned
    assert merged.max_age == 60
    assert merged.allow_credentials is True
    assert merged.allow_methods == base.allow_methods
    m = compile_cors(base, override)
    assert m.origin_allowed(b"https://partner.example.net")
    assert not m.origin_allowed(b"https://app.example.com")
    assert compile_cors(base, CorsOverride()).policy == base


def test_override_cannot_combine_star_with_inherited_credentials() -> None:
    base = load_cors(SHIPPED)
    with pytest.raises(ValidationError, match="allow_credentials"):
        compile_cors(base, CorsOverride(allow_origins=["*"]))


def test_policy_is_frozen() -> None:
    policy = load_cors(SHIPPED)
    with pytest.raises(ValidationError):
        policy.allow_credentials = False  # type: ignore[misc]
    assert isinstance(policy, CorsPolicy)
