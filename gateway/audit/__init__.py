"""Tamper-evident audit log (issue 7, item 2).

    AuditLog         bounded queue + writer thread; submit() from the request path
    request_record   build the record of one request
    sanitize         drop secret-looking keys and values (defence in depth)
    verify_files     first edited / deleted / inserted / reordered line of a chain
    discover_chain   FILE -> [FILE.N, ..., FILE.1, FILE]
    audit_verify_main   `gateway audit verify FILE`
"""

from gateway.audit.chain import GENESIS
from gateway.audit.log import AuditLog, OnFailure
from gateway.audit.records import request_record, rfc3339_now, sanitize
from gateway.audit.verify import VerifyResult, audit_verify_main, discover_chain, verify_files

__all__ = [
    "GENESIS",
    "AuditLog",
    "OnFailure",
    "VerifyResult",
    "audit_verify_main",
    "discover_chain",
    "request_record",
    "rfc3339_now",
    "sanitize",
    "verify_files",
]
