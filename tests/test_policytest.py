"""`gateway test-policy`: the shipped suite passes, wrong expectations fail, bad files are located."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import main as gateway_cli
from gateway.policy.loader import load_policy
from gateway.policytest import policytest_main
from gateway.settings import Settings, effective_env

ROOT = Path(__file__).resolve().parents[1]
POLICY = str(ROOT / "policies")
SHIPPED = str(ROOT / "policies" / "tests")
ALICE = "{sub: alice, org_id: org-a, org_role: member}"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_ENV", "GATEWAY_REDIS_URL", "GATEWAY_JWT_JWKS_URL", "GATEWAY_JWT_ISSUER",
                 "GATEWAY_TRUSTED_PROXIES", "GATEWAY_AUDIT_LOG", "KOMMO_WEBHOOK_SECRET",
                 "KOMMO_CHANNEL_SECRET", "KOMMO_CLIENT_ID", "KOMMO_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAY_JWT_SECRET", "test-policytest-jwt-secret-0123456789abcdef")


def run(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, str]:
    code = policytest_main(["--policy", POLICY, *paths])
    out, err = capsys.readouterr()
    return code, out + err


def test_shipped_suite_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, SHIPPED)
    assert code == 0, out
    m = re.search(r"^(\d+) passed, 0 failed$", out, re.M)
    assert m is not None and int(m.group(1)) >= 25
    assert "FAIL" not in out


def test_default_paths_are_the_policy_tests_folder(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys)
    assert code == 0 and "PASS member lists own org's agents (" in out


def test_tests_folder_does_not_change_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    # The loader reads policies/*.yaml only; the tests/ subfolder must neither break `gateway check`
    # nor add routes.
    settings = Settings()
    policy = load_policy(POLICY, effective_env(settings), False)
    assert {r.id for r in policy.routes} >= {"agents.list", "webhooks.kommo"}
    assert gateway_cli(["check", POLICY]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {len(policy.routes)} routes")


def test_wrong_expectation_fails_with_a_clear_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "wrong.yaml"
    f.write_text(
        "tests:\n"
        "  - name: right\n"
        f"    request: {{method: GET, url: '/v1/agents?orgId=org-a', claims: {ALICE}}}\n"
        "    expect: {status: 200}\n"
        "  - name: other org is wrongly expected to pass\n"
        f"    request: {{method: GET, url: '/v1/agents?orgId=org-b', claims: {ALICE}}}\n"
        "    expect: {status: 200, upstream: {query: orgId=org-b}}\n"
        "  - name: wrong injected body\n"
        f"    request: {{method: POST, url: /v1/agents, claims: {ALICE}, json: {{name: x, model: m}}}}\n"
        "    expect: {upstream: {json: {name: x, model: m}}, response_headers_absent: [Vary]}\n"
    )
    code, out = run(capsys, str(f))
    assert code == 1
    assert f"PASS right ({f}:2)" in out
    assert (f"FAIL other org is wrongly expected to pass ({f}:5): expected status 200, got 403 tenant.mismatch"
            in out)
    assert "expected the request to be forwarded, got 403 tenant.mismatch at tenant" in out
    assert (f"FAIL wrong injected body ({f}:8): expected upstream json "
            '{"name": "x", "model": "m"}, got {"name": "x", "model": "m", "orgId": "org-a"}') in out
    assert "expected response header Vary absent, it is present" in out
    assert out.rstrip().endswith("1 passed, 2 failed")


@pytest.mark.parametrize(("text", "where"), [
    pytest.param("tests:\n  - name: x\n    request: {method: GET, url: /v1/agents}\n    expect: {statuss: 200}\n",
                 ":4 tests[0].expect.statuss: Extra inputs are not permitted", id="unknown_expect_key"),
    pytest.param("tests:\n  - name: x\n    request: {method: GET, url: /v1/agents, claim: {}}\n"
                 "    expect: {status: 200}\n",
                 ":3 tests[0].request.claim: Extra inputs are not permitted", id="unknown_request_key"),
    pytest.param("tests:\n  - name: x\n    request: {method: GET, url: /v1/agents}\n",
                 ":2 tests[0].expect: Field required", id="missing_expect"),
    pytest.param("tests:\n  - name: x\n    request: {method: GET, url: /v1/agents}\n    expect: {}\n",
                 ":4 tests[0].expect: expect must check something", id="expect_checks_nothing"),
    pytest.param("tests:\n  - name: x\n    request: {method: GET, url: /a, token: t, claims: {}}\n"
                 "    expect: {status: 1}\n",
                 ":3 tests[0].request: give claims or token, not both", id="token_and_claims"),
    pytest.param("tests:\n  - name: x\n    name: y\n", ":3 tests[0].name: duplicate key 'name'",
                 id="duplicate_key"),
    pytest.param("tests:\n  - name: x\n    request: [\n", ":4 (yaml):", id="yaml_syntax"),
    pytest.param("tests: []\n", ":1 tests: List should have at least 1 item", id="no_tests"),
    pytest.param("tests:\n  - name: x\n    request: {method: GET, url: /x, sign: {secret_env: A}}\n"
                 "    expect: {status: 1}\n",
                 ":3 tests[0].request.sign: sign needs exactly one of header or query", id="sign_nowhere"),
    pytest.param("tests:\n  - name: x\n    request: {method: GET, url: '/${NOPE_UNSET_VAR}'}\n"
                 "    expect: {status: 1}\n",
                 ":3 tests[0].request.url: environment variable NOPE_UNSET_VAR is not set", id="unset_var"),
])
def test_malformed_file_is_reported_with_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       text: str, where: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    code, out = run(capsys, str(f))
    assert code == 1
    assert f"{f}{where}" in out
    assert "test file error(s)" in out


def test_a_test_file_that_is_not_utf8_is_named_not_a_traceback(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    (tmp_path / "a_latin1.yaml").write_bytes("tests:\n  - name: caf\u00e9\n".encode("latin-1"))
    (tmp_path / "b_good.yaml").write_text(
        f"tests:\n  - name: ok\n    request: {{method: GET, url: /v1/agents, claims: {ALICE}}}\n"
        "    expect: {status: 200}\n")
    code, out = run(capsys, str(tmp_path))
    assert code == 1
    assert f"{tmp_path / 'a_latin1.yaml'}: not UTF-8 text (invalid continuation byte at byte 20)" in out
    assert "PASS ok (" in out and "1 test file error(s)" in out


def test_a_bad_file_does_not_hide_good_ones(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a_bad.yaml").write_text("tests:\n  - nam: x\n")
    (tmp_path / "b_good.yaml").write_text(
        f"tests:\n  - name: ok\n    request: {{method: GET, url: /v1/agents, claims: {ALICE}}}\n"
        "    expect: {status: 200}\n")
    code, out = run(capsys, str(tmp_path))
    assert code == 1
    assert "PASS ok (" in out and "a_bad.yaml:2 tests[0].nam: Extra inputs are not permitted" in out


def test_cases_do_not_share_rate_limit_state(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Each case gets its own gateway: two 2/minute syncs in two cases both pass; `repeat` shares one.
    case = ("  - name: sync {n}\n    request: {{method: POST, url: /v1/crm/connections/c/sync, "
            "claims: {{sub: c, org_id: org-a, org_role: admin}}, repeat: {r}}}\n    expect: {{status: {s}}}\n")
    f = tmp_path / "rl.yaml"
    f.write_text("tests:\n" + "".join(case.format(n=n, r=r, s=s) for n, r, s in
                                      [(1, 2, 200), (2, 2, 200), (3, 3, 429)]))
    code, out = run(capsys, str(f))
    assert code == 0, out


@pytest.mark.parametrize("argv", [
    pytest.param(["/does/not/exist.yaml"], id="missing_path"),
    pytest.param(["--nope"], id="bad_option"),
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert policytest_main(["--policy", POLICY, *argv]) == 2
    capsys.readouterr()


def test_empty_folder_is_not_a_pass(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run(capsys, str(tmp_path))
    assert code == 2 and "no test cases found" in out
