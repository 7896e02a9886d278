"""The data-access layer has no unscoped query: every method takes `org_id`, bar the named few."""

from __future__ import annotations

import inspect

import pytest

from upstream_stub.store.agents import AgentStore
from upstream_stub.store.connections import ConnectionStore
from upstream_stub.store.jobs import JobStore
from upstream_stub.store.leads import LeadStore
from upstream_stub.store.oauth_states import OAuthStateStore
from upstream_stub.store.pg.agents import PgAgentStore
from upstream_stub.store.pg.connections import PgConnectionStore
from upstream_stub.store.pg.jobs import PgJobStore
from upstream_stub.store.pg.leads import PgLeadStore
from upstream_stub.store.pg.oauth_states import PgOAuthStateStore

PAIRS = [(AgentStore, PgAgentStore), (ConnectionStore, PgConnectionStore), (JobStore, PgJobStore),
         (LeadStore, PgLeadStore), (OAuthStateStore, PgOAuthStateStore)]

# The only methods allowed to work across orgs, each for one narrow purpose.
UNSCOPED = {
    "orgs_for_kommo_account_for_webhook",  # webhook → connections of a Kommo account
    "orgs_for_kommo_amojo_for_webhook",  # chat webhook → connections of a Kommo chat account
    "claim_next_any_org",  # the worker claims; the job is then handled within its own org
    "renew", "complete", "fail", "release",  # fenced by the claim token of a job already claimed
    "new_id",
}


@pytest.mark.parametrize("store", [cls for pair in PAIRS for cls in pair])
def test_every_store_method_takes_org_id(store: type) -> None:
    for name, fn in inspect.getmembers(store, inspect.isfunction):
        if name.startswith("_") or name in UNSCOPED:
            continue
        params = list(inspect.signature(fn).parameters)
        assert params[1:2] == ["org_id"], f"{store.__name__}.{name} must take org_id first"
        src = inspect.getsource(fn)
        # On PostgreSQL row-level security filters as well; the query still names the org itself.
        assert "org_id = ?" in src or "org_id = %s" in src or "INSERT" in src, f"{store.__name__}.{name} has no org filter"


@pytest.mark.parametrize(("sqlite", "postgres"), PAIRS)
def test_both_backends_offer_the_same_methods_and_signatures(sqlite: type, postgres: type) -> None:
    """The routes and the worker use either backend's store; the public surface cannot drift."""
    def surface(cls: type) -> dict[str, list[str]]:
        return {name: list(inspect.signature(fn).parameters)
                for name, fn in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}
    assert surface(sqlite) == surface(postgres)
