"""The bundled upstream: agents, CRM connections, durable jobs and the Kommo integration.

Every route but `/healthz` trusts only the gateway's signed identity (`X-Gateway-Identity`) and
scopes every read and write by the identity's org, so a request that bypasses the gateway gets
nothing (issue 6).
"""
