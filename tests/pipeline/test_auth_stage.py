"""AuthStage on its own: which Authorization values are a bearer credential, when the stage steps
aside, how long a token naming an unknown kid waits for the key set, and how the stage reads the
brute-force guard's answers. A scripted guard stands in for the races between replicas (a block
learnt after the pre-check, one that lapsed mid-request) that one process cannot stage on demand."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError, TooManyAuthFailures, Unauthorized
from gateway.pipeline import auth as auth_module
from gateway.pipeline.auth import AuthStage
from gateway.policy.compiled import CompiledRoute
from gateway.ratelimit import BruteForceGuard
from tests.pipeline.stage_kit import stage_route

IP = "203.0.113.7"
GOOD = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2ln"
CLAIMS: dict[str, Any] = {"sub": "u1", "org_id": "org-a"}
CHALLENGE = 'Bearer realm="api", error="invalid_token"'


class StubVerifier:
    """Accepts GOOD, refuses anything else as a bad signature; `errors` are raised first, in order.
    `renew` is what `await_new_keys` answers (None: the fetch never ends). No token cache."""

    def __init__(self, errors: list[Unauthorized] | None = None, renew: bool | None = True) -> None:
        self.errors = list(errors or [])
        self.renew = renew
        self.calls: list[str] = []
        self.waits = 0

    def verify(self, token: str) -> dict[str, Any]:
        self.calls.append(token)
        if self.errors:
            raise self.errors.pop(0)
        if token == GOOD:
            return dict(CLAIMS)
        raise Unauthorized("auth.bad_signature", "signature does not verify")

    async def await_new_keys(self) -> bool:
        self.waits += 1
        if self.renew is None:
            await asyncio.Event().wait()  # never set: only the stage's own bound ends this wait
        return bool(self.renew)


class ScriptedGuard:
    """The BruteForceGuard interface the stage uses, with fixed answers; records every address it
    is asked about, the failures counted, the verifications taken and given back."""

    _refusal = TooManyAuthFailures
    refusal = BruteForceGuard.refusal  # the real 429 (reason, Retry-After)

    def __init__(self, *, blocked: int | None = None, known: int | None = None, started: int | None = None,
                 budget: int = 0) -> None:
        self._blocked, self._known, self._started, self.budget = blocked, known, started, budget
        self.addresses: set[str | None] = set()
        self.failures = self.taken = self.refunds = 0

    async def blocked(self, ip: str) -> int | None:
        self.addresses.add(ip)
        return self._blocked

    async def record_failure(self, ip: str) -> int | None:
        self.addresses.add(ip)
        self.failures += 1
        return self._started

    def known_block(self, ip: str) -> int | None:
        self.addresses.add(ip)
        return self._known

    def take_verification(self, ip: str) -> bool:
        self.addresses.add(ip)
        if self.budget < 1:
            return False
        self.budget -= 1
        self.taken += 1
        return True

    def refund(self, ip: str) -> None:
        self.addresses.add(ip)
        self.refunds += 1


class Downstream:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, dict[str, Any] | None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx: RequestContext = scope["gateway"]
        self.seen.append((ctx.token, ctx.claims))


def route(auth: str = "jwt") -> CompiledRoute:
    return stage_route(auth=auth)


class Harness:
    def __init__(self, verifier: StubVerifier | None = None, guard: ScriptedGuard | None = None,
                 *, with_guard: bool = True) -> None:
        self.verifier = verifier if verifier is not None else StubVerifier()
        self.guard = guard if guard is not None else ScriptedGuard()
        self.events: list[tuple[str, str]] = []
        self.downstream = Downstream()
        if with_guard:
            self.stage = AuthStage(self.downstream, lambda: self.verifier,  # type: ignore[arg-type,return-value]
                                   guard=lambda: self.guard,  # type: ignore[arg-type,return-value]
                                   event=lambda scope, what: self.events.append((scope, what)))
        else:
            self.stage = AuthStage(self.downstream, lambda: self.verifier)  # type: ignore[arg-type,return-value]

    async def call(self, *authorization: bytes, auth: str = "jwt", preflight: bool = False) -> None:
        ctx = RequestContext("req-1", IP, None)  # type: ignore[arg-type]
        ctx.route = route(auth)
        scope: dict[str, Any] = {"type": "http", "method": "GET", "gateway": ctx,
                                 "headers": [(b"host", b"gw.test")] + [(b"authorization", v) for v in authorization]}
        if preflight:
            scope["gateway.preflight"] = True
        await self.stage(scope, None, None)  # type: ignore[arg-type]

    async def refused(self, *authorization: bytes) -> GatewayError:
        with pytest.raises(GatewayError) as info:
            await self.call(*authorization)
        assert self.downstream.seen == []
        return info.value


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


# --- the credential -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    pytest.param(b"Bearer " + GOOD.encode(), id="canonical"),
    pytest.param(b"bearer " + GOOD.encode(), id="scheme_lower_case"),
    pytest.param(b"BEARER " + GOOD.encode(), id="scheme_upper_case"),
    pytest.param(b"Bearer  " + GOOD.encode(), id="two_spaces"),  # RFC 6750: "Bearer" 1*SP b64token
    pytest.param(b"Bearer " + GOOD.encode() + b" ", id="trailing_space"),
])
async def test_a_bearer_credential_is_verified_and_handed_on(value: bytes) -> None:
    h = Harness()
    await h.call(value)
    assert h.verifier.calls == [GOOD]
    assert h.downstream.seen == [(GOOD, CLAIMS)]


@pytest.mark.parametrize("value", [
    pytest.param(b"Basic " + GOOD.encode(), id="other_scheme"),
    pytest.param(b"Token " + GOOD.encode(), id="unknown_scheme"),
    pytest.param(b"Bearer" + GOOD.encode(), id="no_separator"),
    pytest.param(b"Bearer", id="scheme_only"),
    pytest.param(b"Bearer ", id="empty_token"),
    pytest.param(b"Bearer " + GOOD.encode() + b" x", id="two_words"),
    pytest.param(b"Bearer " + GOOD.encode() + b"  x", id="two_words_two_spaces"),
    pytest.param(b"Bearer \xff" + GOOD.encode(), id="not_ascii"),
    pytest.param(b"Bearer " + GOOD.encode() + b"\xc3\xa9", id="not_ascii_utf8"),
])
async def test_a_malformed_credential_is_refused_before_any_verification(value: bytes) -> None:
    # The verifier would accept GOOD: only the stage's own parsing can refuse these.
    h = Harness()
    err = await h.refused(value)
    assert (err.status, err.reason) == (401, "auth.malformed")
    assert err.headers == {"WWW-Authenticate": CHALLENGE}
    assert h.verifier.calls == []


async def test_more_than_one_authorization_header_is_malformed_even_if_each_is_valid() -> None:
    h = Harness()
    err = await h.refused(bearer(GOOD), bearer(GOOD))
    assert (err.status, err.reason) == (401, "auth.malformed")
    assert err.headers == {"WWW-Authenticate": CHALLENGE}
    assert h.verifier.calls == []


async def test_a_missing_token_is_not_counted_nor_the_guard_asked() -> None:
    h = Harness()
    err = await h.refused()
    assert (err.status, err.reason) == (401, "auth.missing_token")
    assert err.headers == {"WWW-Authenticate": 'Bearer realm="api"'}
    assert (h.guard.addresses, h.guard.failures, h.verifier.calls) == (set(), 0, [])


async def test_without_key_material_the_token_is_refused_as_unavailable_and_not_counted() -> None:
    h = Harness()
    h.stage.verifier = lambda: None
    err = await h.refused(bearer(GOOD))
    assert (err.status, err.reason) == (401, "auth.unavailable")
    assert err.headers == {"WWW-Authenticate": CHALLENGE}
    assert h.guard.failures == 0


# --- stepping aside -----------------------------------------------------------------------------

async def test_cors_preflight_steps_aside() -> None:
    h = Harness()
    await h.call(preflight=True)  # no credential: a preflight never carries one
    assert h.downstream.seen == [(None, None)]
    assert (h.verifier.calls, h.guard.addresses) == ([], set())


@pytest.mark.parametrize("auth", ["none", "webhook"])
async def test_routes_without_jwt_step_aside(auth: str) -> None:
    h = Harness()
    await h.call(b"Basic Zm9vOmJhcg==", auth=auth)
    assert h.downstream.seen == [(None, None)]
    assert h.verifier.calls == []


# --- without a brute-force guard ----------------------------------------------------------------

async def test_without_a_guard_valid_tokens_pass_and_failures_are_plain_401() -> None:
    h = Harness(with_guard=False)
    await h.call(bearer(GOOD))
    assert h.downstream.seen == [(GOOD, CLAIMS)]
    h.downstream.seen.clear()
    for _ in range(3):
        err = await h.refused(bearer("not-the-token"))
        assert (err.status, err.reason) == (401, "auth.bad_signature")


# --- a key rotated in at the IdP ----------------------------------------------------------------

def unknown_kid() -> Unauthorized:
    return Unauthorized("auth.unknown_kid", "token key is not known")


async def test_unknown_kid_waits_for_the_new_key_set_and_verifies_once_more() -> None:
    h = Harness(StubVerifier([unknown_kid()], renew=True))
    await h.call(bearer(GOOD))
    assert (h.verifier.waits, h.verifier.calls) == (1, [GOOD, GOOD])
    assert h.downstream.seen == [(GOOD, CLAIMS)]
    assert h.guard.failures == 0


async def test_unknown_kid_without_new_keys_is_refused_without_a_second_verification() -> None:
    h = Harness(StubVerifier([unknown_kid()], renew=False))
    err = await h.refused(bearer(GOOD))
    assert (err.status, err.reason) == (401, "auth.unknown_kid")
    assert (h.verifier.waits, h.verifier.calls) == (1, [GOOD])
    assert h.guard.failures == 1


@pytest.mark.parametrize("reason", ["auth.expired", "auth.bad_signature", "auth.malformed"])
async def test_other_failures_do_not_wait_for_keys(reason: str) -> None:
    h = Harness(StubVerifier([Unauthorized(reason, "no")]))
    err = await h.refused(bearer(GOOD))
    assert (err.status, err.reason) == (401, reason)
    assert (h.verifier.waits, h.verifier.calls) == (0, [GOOD])


async def test_the_wait_for_a_key_set_fetch_that_never_ends_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "UNKNOWN_KID_WAIT", 0.05)
    # The verifier would accept the token on a second try: past the bound it must not be asked.
    h = Harness(StubVerifier([unknown_kid()], renew=None))
    with pytest.raises(Unauthorized) as info:
        await asyncio.wait_for(h.call(bearer(GOOD)), 30)  # the outer bound only catches a hang
    assert info.value.reason == "auth.unknown_kid"
    assert (h.verifier.waits, h.verifier.calls) == (1, [GOOD])
    assert h.downstream.seen == []


# --- reading the guard --------------------------------------------------------------------------

async def test_the_failure_that_starts_a_block_is_still_answered_401() -> None:
    h = Harness(guard=ScriptedGuard(started=60))
    err = await h.refused(bearer("not-the-token"))
    assert (err.status, err.reason) == (401, "auth.bad_signature")
    assert h.events == [("auth", "block")]
    assert (h.guard.failures, h.guard.addresses) == (1, {IP})


async def test_a_block_learnt_while_verifying_refuses_with_its_own_retry_after() -> None:
    # Not blocked at the pre-check; recording the failure learns a block (another replica's, or a
    # concurrent request's): refused 429 with the block's time left, not answered 401.
    h = Harness(guard=ScriptedGuard(blocked=None, known=42))
    err = await h.refused(bearer("not-the-token"))
    assert (err.status, err.reason) == (429, "auth.too_many_failures")
    assert err.headers["Retry-After"] == "42"
    assert h.events == [("auth", "refused")]
    assert (h.guard.failures, h.guard.taken, h.guard.addresses) == (1, 0, {IP})


async def test_a_block_known_only_from_the_pre_check_sets_the_retry_after() -> None:
    h = Harness(guard=ScriptedGuard(blocked=30, known=None, budget=1))
    err = await h.refused(bearer("not-the-token"))
    assert (err.status, err.reason) == (429, "auth.too_many_failures")
    assert err.headers["Retry-After"] == "30"
    assert h.events == [("auth", "refused")]
    assert (h.guard.failures, h.guard.taken, h.guard.addresses) == (1, 1, {IP})


async def test_the_latest_block_wins_over_the_pre_check() -> None:
    h = Harness(guard=ScriptedGuard(blocked=30, known=42, budget=1))
    err = await h.refused(bearer("not-the-token"))
    assert (err.status, err.headers["Retry-After"]) == (429, "42")


async def test_a_blocked_address_without_budget_is_refused_for_a_second_unverified() -> None:
    h = Harness(guard=ScriptedGuard(blocked=30, known=30, budget=0))
    err = await h.refused(bearer(GOOD))
    assert (err.status, err.reason) == (429, "auth.too_many_failures")
    assert err.headers["Retry-After"] == "1"
    assert h.events == [("auth", "budget_refused")]
    assert h.verifier.calls == []
    assert (h.guard.failures, h.guard.addresses) == (0, {IP})


async def test_a_valid_token_from_a_blocked_address_is_served_and_its_check_given_back() -> None:
    h = Harness(guard=ScriptedGuard(blocked=30, known=30, budget=1))
    await h.call(bearer(GOOD))
    assert h.downstream.seen == [(GOOD, CLAIMS)]
    assert (h.guard.taken, h.guard.refunds, h.guard.failures, h.guard.addresses) == (1, 1, 0, {IP})
    assert h.events == []


async def test_a_valid_token_from_an_unblocked_address_leaves_the_budget_alone() -> None:
    h = Harness(guard=ScriptedGuard(blocked=None))
    await h.call(bearer(GOOD))
    assert h.downstream.seen == [(GOOD, CLAIMS)]
    assert (h.guard.taken, h.guard.refunds, h.guard.failures) == (0, 0, 0)


async def test_a_verifier_whose_cache_cannot_be_asked_is_charged() -> None:
    # The cache exemption must fail closed: a cache that cannot answer "is this token in you?"
    # means the token is checked, and charged, like any other.
    v = StubVerifier()
    v._cache = object()  # type: ignore[attr-defined]
    h = Harness(v, ScriptedGuard(blocked=30, known=30, budget=0))
    err = await h.refused(bearer(GOOD))
    assert (err.status, err.headers["Retry-After"]) == (429, "1")
    assert v.calls == []


async def test_a_cached_token_from_a_blocked_address_is_not_charged() -> None:
    v = StubVerifier()
    v._cache = {GOOD: object()}  # type: ignore[attr-defined]
    h = Harness(v, ScriptedGuard(blocked=30, known=30, budget=0))
    await h.call(bearer(GOOD))
    assert h.downstream.seen == [(GOOD, CLAIMS)]
    assert h.guard.taken == 0
