"""The API contract at the edge: the OpenAPI document, body validation, deprecation, the docs.

    document      load `openapi.yaml`, index its operations, the served JSON and its ETag
    policy        the `api:` section; per-route body rules and deprecation; route/operation check
    validation    JSON Schema validation of request bodies (jsonschema-rs, compiled at load)
    deprecation   Deprecation / Sunset / Link headers and the sunset instant
    generate      map the upstream's own document onto the public route table
    docs          the docs page, its static assets, and the reason catalogue page
"""

from gateway.openapi.document import ApiDocument, Operation, load_document
from gateway.openapi.validation import BodyRule, compile_body_rule

__all__ = ["ApiDocument", "BodyRule", "Operation", "compile_body_rule", "load_document"]
