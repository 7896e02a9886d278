"""The PostgreSQL store: the same classes, methods and results as the SQLite one beside it.

Every method runs in a tenant transaction (`db.tenant(org_id)`), so the database's row-level
security admits only that org's rows, and still filters by `org_id` itself: two layers, either of
which alone keeps tenants apart. The cross-tenant paths call SECURITY DEFINER functions created by
`python -m upstream_stub migrate` (see `upstream_stub/migrations/postgres.py`).
"""
