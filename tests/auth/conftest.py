"""Fixtures of the auth tests; the factories live in tests/auth/factories.py."""

from tests.auth.factories import keys  # noqa: F401  (session fixture: RSA/EC/Ed25519 keys)
