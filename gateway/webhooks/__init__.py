"""Webhook core: verifiers per scheme, source allowlists, and replay/duplicate protection.

config.py     the `webhook:` section of a route (pydantic, validated at load)
verifiers.py  url_token, hmac, standard_webhooks, kommo_revoked; compile_verifier()
compiled.py   CompiledWebhook: verifier + source_ips + dedupe + body cap; compile_webhook()
dedupe.py     DedupeStore protocol, MemoryDedupeStore, dedupe_key(), dedupe_store_from_url()
dedupe_redis.py RedisDedupeStore (shared by all replicas)
errors.py     WebhookConfigError (start-up), DedupeStoreUnavailable (503)
"""

from gateway.webhooks.compiled import CompiledWebhook, compile_webhook
from gateway.webhooks.config import DedupeConfig, WebhookConfig, parse_webhook_config
from gateway.webhooks.dedupe import DedupeStore, MemoryDedupeStore, dedupe_key, dedupe_store_from_url
from gateway.webhooks.dedupe_redis import RedisDedupeStore
from gateway.webhooks.errors import DedupeStoreUnavailable, WebhookConfigError
from gateway.webhooks.verifiers import Verifier, compile_verifier

__all__ = [
    "CompiledWebhook",
    "DedupeConfig",
    "DedupeStore",
    "DedupeStoreUnavailable",
    "MemoryDedupeStore",
    "RedisDedupeStore",
    "Verifier",
    "WebhookConfig",
    "WebhookConfigError",
    "compile_verifier",
    "compile_webhook",
    "dedupe_key",
    "dedupe_store_from_url",
    "parse_webhook_config",
]
