"""The data-access layer has no unscoped query: every method takes `org_id`, bar the named few."""

from __future__ import annotations

import inspect

import pytest

from upstream_stub.store.agents import AgentStore
from upstream_stub.store.connections import ConnectionStore
from upstream_stub.store.jobs import JobStore
from upstream_stub.store.leads import LeadStore
from upstream_stub.store.oauth_states import OAuthStateStore

# The only methods allowed to work across orgs, each for one narrow purpose.
UNSCOPED = {
    "orgs_for_kommo_account_for_webhook",  # webhook → connections of a Kommo account
    "orgs_for_kommo_amojo_for_webhook",  # chat webhook → connections of a Kommo chat account
    "claim_next_any_org",  # the worker claims; the job is then handled within its own org
    "renew", "complete", "fail", "release",  # fenced by the claim token of a job already claimed
    "new_id",
}


@pytest.mark.parametrize("store", [AgentStore, ConnectionStore, JobStore, LeadStore, OAuthStateStore])
def test_every_store_method_takes_org_id(store: type) -> None:
    for name, fn in inspect.getmembers(store, inspect.isfunction):
        if name.startswith("_") or name in UNSCOPED:
            continue
        params = list(inspect.signature(fn).parameters)
        assert params[1:2] == ["org_id"], f"{store.__name__}.{name} must take org_id first"
        src = inspect.getsource(fn)
        assert "org_id = ?" in src or "INSERT" in src, f"{store.__name__}.{name} has no org filter"
