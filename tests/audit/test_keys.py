"""GATEWAY_AUDIT_KEY as the audit trail reads it: every malformed value is one error naming the
variable and the entry, never a traceback (the value comes from an operator's environment)."""

from __future__ import annotations

import pytest

from gateway.audit.keys import AuditKeyError, AuditKeys

STRONG = "k" * 40


def test_unset_is_the_development_key_outside_production_only() -> None:
    assert AuditKeys.parse(None).development and AuditKeys.parse("  ").development
    with pytest.raises(AuditKeyError, match="must be set in production"):
        AuditKeys.parse(None, production=True)


def test_several_keys_the_first_signs() -> None:
    keys = AuditKeys.parse(f"new:{STRONG}, old:{'o' * 40}", production=True)
    assert keys.active.kid == "new" and set(keys.by_kid) == {"new", "old"} and not keys.development


@pytest.mark.parametrize(("value", "message"), [
    pytest.param(f"a:{STRONG},,b:{STRONG}", "entry 2 is empty", id="empty_entry"),
    pytest.param(f"bad id:{STRONG}", "entry 1: key id must match", id="bad_kid"),
    pytest.param("k1:", "entry 1 has an empty secret", id="empty_secret"),
    pytest.param(f"k1:{STRONG},k1:{STRONG}x", "the same key id appears twice", id="duplicate_kid"),
    # os.environ keeps bytes that are not UTF-8 as lone surrogates: this was a UnicodeEncodeError.
    pytest.param("k1:\udcff" + STRONG, "entry 1 is not UTF-8 text", id="not_utf8"),
])
def test_malformed_values_are_named(value: str, message: str) -> None:
    with pytest.raises(AuditKeyError) as exc:
        AuditKeys.parse(value)
    assert str(exc.value).startswith("GATEWAY_AUDIT_KEY") and message in str(exc.value)


@pytest.mark.parametrize("value", ["k1:short", f"k1:dev-only-{STRONG}"])
def test_weak_keys_are_refused_in_production_only(value: str) -> None:
    assert AuditKeys.parse(value).active.kid == "k1"
    with pytest.raises(AuditKeyError, match="refused in production"):
        AuditKeys.parse(value, production=True)
