from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import respx

from tests.upstream import pg
from tests.upstream.kommo_fake import FakeKommo
from tests.upstream.support import Upstream, make_settings, running

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_env() -> Iterator[pg.PgEnv]:
    """This run's migrated PostgreSQL database, its owner and its application role; dropped at the end."""
    pg.sweep_stale()
    env = pg.migrated()
    try:
        yield env
    finally:
        pg.drop(env)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store lives: an SQLite file, or the PostgreSQL database (emptied) as the app role."""
    if request.param == "sqlite":
        return str(tmp_path / "upstream.db")
    env: pg.PgEnv = request.getfixturevalue("pg_env")
    env.truncate()
    return env.app_url


@pytest.fixture
def kommo() -> Iterator[FakeKommo]:
    """A fake Kommo account; any other outbound request fails the test (assert_all_mocked)."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield FakeKommo().install(router)


@pytest.fixture
async def up(tmp_path: Path, kommo: FakeKommo, backend: str) -> AsyncIterator[Upstream]:
    """The running upstream, once on each backend."""
    store = {"database_url": backend} if backend.startswith("postgresql://") else {"db_path": backend}
    async with running(make_settings(tmp_path, **store)) as upstream:
        yield upstream
