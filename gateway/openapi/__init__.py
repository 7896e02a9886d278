"""The API contract at the edge: the OpenAPI document, edge validation, deprecation, the docs.

    document      load `openapi.yaml`, index its operations, the served JSON and its ETag
    policy        the `api:` section; per-route body and parameter rules, deprecation; route/operation check
    validation    JSON Schema validation of request bodies (jsonschema-rs, compiled at load)
    parameters    query and path parameters checked against their schemas, as the upstream decodes them
    deprecation   Deprecation / Sunset / Link headers and the sunset instant
    generate      map the upstream's own document onto the public route table
    docs          the docs page, its static assets, and the reason catalogue page
"""

from gateway.openapi.document import ApiDocument, Operation, load_document
from gateway.openapi.validation import BodyRule, compile_body_rule

__all__ = ["ApiDocument", "BodyRule", "Operation", "compile_body_rule", "load_document"]
