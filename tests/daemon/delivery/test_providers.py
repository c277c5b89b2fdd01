"""A reload that comes while the provider supervisor is still setting up is not lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.delivery import providers
from dropsync.daemon.delivery.providers import ProviderSupervisor
from dropsync.store.handle import Store

pytestmark = pytest.mark.anyio


def config(tmp_path: Path, names: list[str]) -> Config:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "providers": {
                name: {"kind": "crm", "base_url": "http://127.0.0.1:9", "account_id": "a"}
                for name in names
            },
        },
        "test.toml",
    )


async def test_a_reload_during_set_up_sets_up_the_new_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = config(tmp_path, ["crm"]), config(tmp_path, ["crm", "crm2"])
    async with await Store.open(first.store_path) as store:
        supervisor = ProviderSupervisor(store, first)
        set_up = providers.set_routes  # type: ignore[attr-defined]
        calls = 0

        def reload_midway(conn: Any, routed: Config) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:  # SIGHUP lands while the first config is being set up
                supervisor.reload(second)
            set_up(conn, routed)

        monkeypatch.setattr(providers, "set_routes", reload_midway)

        async def registered() -> list[str]:
            async with store.read() as db:
                rows = await db.execute_fetchall("SELECT name FROM providers ORDER BY name")
            return [row[0] for row in rows]

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(supervisor.run)
                while set(supervisor.flushers) != {"crm", "crm2"}:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        assert await registered() == ["crm", "crm2"]
