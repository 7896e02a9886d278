from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import respx

from tests.upstream.kommo_fake import FakeKommo
from tests.upstream.support import Upstream, make_settings, running


@pytest.fixture
def kommo() -> Iterator[FakeKommo]:
    """A fake Kommo account; any other outbound request fails the test (assert_all_mocked)."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield FakeKommo().install(router)


@pytest.fixture
async def up(tmp_path: Path, kommo: FakeKommo) -> AsyncIterator[Upstream]:
    async with running(make_settings(tmp_path)) as upstream:
        yield upstream
