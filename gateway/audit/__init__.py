"""Tamper-evident audit log: keyed chain, signed checkpoints kept apart.

    AuditLog         bounded queue + writer thread; submit() from the request path
    AuditKeys        GATEWAY_AUDIT_KEY: the signing key and the keys that verify
    request_record   build the record of one request
    sanitize         drop secret-looking keys and values (defence in depth)
    verify_files     every broken line, cut tail, rollback and unanchored line of a chain
    discover_chain   FILE -> [FILE.N, ..., FILE.1, FILE]
    audit_verify_main   `gateway audit verify FILE`
"""

from gateway.audit.chain import GENESIS
from gateway.audit.keys import AuditKeyError, AuditKeys
from gateway.audit.log import AuditLog, OnFailure
from gateway.audit.records import request_record, rfc3339_now, sanitize
from gateway.audit.verify import Finding, VerifyResult, audit_verify_main, discover_chain, verify_files

__all__ = [
    "GENESIS",
    "AuditKeyError",
    "AuditKeys",
    "AuditLog",
    "Finding",
    "OnFailure",
    "VerifyResult",
    "audit_verify_main",
    "discover_chain",
    "request_record",
    "rfc3339_now",
    "sanitize",
    "verify_files",
]
