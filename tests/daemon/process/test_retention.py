"""The daemon's retention pass: old ``.done/`` files go, their versions stay in the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import orjson
from dropsync.daemon.cli.audit import version_json
from dropsync.daemon.config import Config, load_config
from dropsync.daemon.ingest.ingestor import Ingestor
from dropsync.daemon.process.retention import DAY_MS, Retention
from dropsync.store import callbacks
from dropsync.store.handle import Store
from dropsync.store.history import versions_seen
from dropsync.store.queries import current_record
from structlog.testing import capture_logs


def superseded_body(store_path: Path) -> object:
    """The body the inbox keeps of a@x's displaced version (None: it has none)."""
    db = sqlite3.connect(store_path)
    try:
        [(body,)] = db.execute(
            "SELECT body FROM inbox WHERE key = 'a@x' AND status = 'superseded'"
        ).fetchall()
    finally:
        db.close()
    return None if body is None else orjson.loads(body)


def contacts_config(tmp_path: Path) -> tuple[Config, Path]:
    """A config keeping done files 7 days and no delivery history, and its contacts folder."""
    config_path = tmp_path / "dropsync.toml"
    config_path.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\nretain_days = 0\n'
        f'[drop]\npath = "{tmp_path / "drop"}"\nkeep_done_days = 7\n'
        '[collections.contacts]\nkey = "email"\ntimestamp = "at"\ntimestamp_unit = "ms"\n'
    )
    config = load_config(str(config_path))
    folder = config.drop_path / "contacts"
    folder.mkdir(parents=True)
    return config, folder


def test_old_done_files_are_removed_and_their_versions_kept(tmp_path: Path) -> None:
    config, folder = contacts_config(tmp_path)
    first = {"email": "a@x", "at": 100, "name": "Ann"}
    second = {"email": "a@x", "at": 200, "name": "Ann Lee"}

    async def run() -> None:
        async with await Store.open(config.store_path) as store:
            ingestor = Ingestor(store, config)
            for name, doc in (("one.json", first), ("two.json", second)):
                (folder / name).write_bytes(orjson.dumps([doc, {"email": name, "at": 1}]))
                await ingestor.ingest_dropped(folder / name)
            await Retention(store, config).prune_once(now_ms_at(config.store_path, days=3))
            assert sorted(p.name for p in (folder / ".done").iterdir()) == [
                "one.json",
                "two.json",
            ]
            pruned = await Retention(store, config).prune_once(now_ms_at(config.store_path, days=8))
            assert pruned.done_files == 2

    anyio.run(run)
    assert list((folder / ".done").iterdir()) == []
    db = sqlite3.connect(config.store_path)
    # The version displaced by two.json lived only in one.json; it is in the inbox now.
    [(body,)] = db.execute(
        "SELECT body FROM inbox WHERE key = 'a@x' AND status = 'superseded'"
    ).fetchall()
    assert orjson.loads(body) == first
    record = current_record(db, "contacts", "a@x")
    assert record is not None and orjson.loads(record["body"]) == second
    explained = [
        version_json(v, record)["explanation"] for v in versions_seen(db, "contacts", "a@x")
    ]
    assert explained[0].startswith("lost: older timestamp") and "current version" in explained
    assert db.execute("SELECT COUNT(*) FROM records").fetchone() == (3,)
    db.close()


def now_ms_at(store: Path, *, days: int) -> int:
    """``days`` after the newest file was filed away."""
    db = sqlite3.connect(store)
    (finished,) = db.execute("SELECT MAX(finished_at) FROM files").fetchone()
    db.close()
    return int(finished) + days * DAY_MS


def test_a_version_is_kept_whatever_rules_the_config_has_now(tmp_path: Path) -> None:
    """The bodies are copied from the file as they are: a document taken under other rules
    (an older dropsync that read 100 as milliseconds; another timestamp_unit; a key path
    changed since) keeps its version when its file goes."""
    config_path = tmp_path / "dropsync.toml"
    table = '[collections.contacts]\nkey = "email"\ntimestamp = "at"\n'
    config_path.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\nretain_days = 0\n'
        f'[drop]\npath = "{tmp_path / "drop"}"\nkeep_done_days = 7\n'
        f'{table}timestamp_unit = "s"\n'
    )
    then = load_config(str(config_path))
    config_path.write_text(config_path.read_text().replace('timestamp_unit = "s"', 'key = "id"'))
    config_path.write_text(config_path.read_text().replace('key = "email"\n', ""))
    now = load_config(str(config_path))
    folder = then.drop_path / "contacts"
    folder.mkdir(parents=True)
    first = {"email": "a@x", "at": 1_600_000_000, "name": "Ann"}
    second = {"email": "a@x", "at": 1_600_000_001, "name": "Ann Lee"}

    async def run() -> None:
        async with await Store.open(then.store_path) as store:
            ingestor = Ingestor(store, then)
            for name, doc in (("one.json", first), ("two.json", second)):
                (folder / name).write_bytes(orjson.dumps([doc]))
                await ingestor.ingest_dropped(folder / name)
            pruned = await Retention(store, now).prune_once(now_ms_at(now.store_path, days=8))
            assert pruned.done_files == 2

    anyio.run(run)
    assert superseded_body(then.store_path) == first


def test_only_files_in_a_done_folder_of_the_drop_folder_are_removed(tmp_path: Path) -> None:
    config_path = tmp_path / "dropsync.toml"
    config_path.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\nretain_days = 0\n'
        f'[drop]\npath = "{tmp_path / "drop"}"\nkeep_done_days = 7\n'
        '[collections.contacts]\nkey = "email"\ntimestamp = "at"\ntimestamp_unit = "ms"\n'
    )
    config = load_config(str(config_path))
    # A file of the user's, ingested in place (`dropsync ingest FILE`): its ledger row says
    # done, and it sits in a folder that happens to be called .done, outside the drop folder.
    mine = tmp_path / "archive/contacts/.done/mine.json"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(orjson.dumps([{"email": "m@x", "at": 5}]))
    # A .done folder of the drop folder that became a link to a folder elsewhere.
    elsewhere = tmp_path / "elsewhere"
    (config.drop_path / "contacts").mkdir(parents=True)
    linked = config.drop_path / "contacts/linked.json"
    linked.write_bytes(orjson.dumps([{"email": "l@x", "at": 6}]))

    async def run() -> None:
        async with await Store.open(config.store_path) as store:
            ingestor = Ingestor(store, config)
            report = await ingestor.ingest_in_place(mine, "contacts")
            assert report.status == "done"
            dropped = await ingestor.ingest_dropped(linked)
            assert dropped is not None and dropped.status == "done"
            (config.drop_path / "contacts/.done").rename(elsewhere)
            (config.drop_path / "contacts/.done").symlink_to(elsewhere)
            with capture_logs() as logs:
                pruned = await Retention(store, config).prune_once(
                    now_ms_at(config.store_path, days=8)
                )
            assert pruned.done_files == 0
            [kept] = [e for e in logs if e["event"] == "done_file_kept"]
            assert kept["log_level"] == "warning" and str(elsewhere) in kept["error"]

    anyio.run(run)
    assert mine.is_file()
    assert (elsewhere / "linked.json").is_file()


def test_callback_signatures_outlive_any_callback_age(tmp_path: Path) -> None:
    # The replay memory must be kept at least as long as a callback is taken
    # (max_callback_age_s, a day by default): retention never removes it.
    config_path = tmp_path / "dropsync.toml"
    config_path.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\nretain_days = 1\n'
        f'[drop]\npath = "{tmp_path / "drop"}"\n'
    )
    config = load_config(str(config_path))

    async def run() -> None:
        async with await Store.open(config.store_path) as store:
            await store.transact(
                lambda db: callbacks.remember_signature(
                    db, "churn", "sync-status", "ab" * 64, now=1
                )
            )
            await Retention(store, config).prune_once(1 + 400 * DAY_MS)

    anyio.run(run)
    db = sqlite3.connect(config.store_path)
    assert db.execute("SELECT provider, received_at FROM callback_signatures").fetchall() == [
        ("churn", 1)
    ]


def test_a_version_whose_file_went_keeps_its_body_when_displaced_later(tmp_path: Path) -> None:
    """A file's version still current when the file goes lives on in ``records``; a later
    version that displaces it logs it with that body, since the file is no longer there."""
    config, folder = contacts_config(tmp_path)
    first = {"email": "a@x", "at": 100, "name": "Ann"}
    second = {"email": "a@x", "at": 200, "name": "Ann Lee"}

    async def run() -> None:
        async with await Store.open(config.store_path) as store:
            ingestor = Ingestor(store, config)
            (folder / "one.json").write_bytes(orjson.dumps([first]))
            await ingestor.ingest_dropped(folder / "one.json")
            pruned = await Retention(store, config).prune_once(now_ms_at(config.store_path, days=8))
            assert pruned.done_files == 1
            (folder / "two.json").write_bytes(orjson.dumps([second]))
            await ingestor.ingest_dropped(folder / "two.json")

    anyio.run(run)
    assert not (folder / ".done/one.json").exists()
    assert superseded_body(config.store_path) == first


def test_a_version_displaced_while_its_file_is_being_removed_keeps_its_body(
    tmp_path: Path,
) -> None:
    """An ingest that commits after the pass copied the file's bodies, before the file goes
    (the pass and the ingests share the store, one transaction at a time)."""
    config, folder = contacts_config(tmp_path)
    first = {"email": "a@x", "at": 100, "name": "Ann"}
    second = {"email": "a@x", "at": 200, "name": "Ann Lee"}

    async def run() -> None:
        async with await Store.open(config.store_path) as store:
            ingestor = Ingestor(store, config)

            class IngestMeanwhile(Retention):
                async def _keep_versions(self, file_id: int, path: Path) -> None:
                    await super()._keep_versions(file_id, path)
                    if path.name == "one.json":
                        (folder / "two.json").write_bytes(orjson.dumps([second]))
                        await ingestor.ingest_dropped(folder / "two.json")

            (folder / "one.json").write_bytes(orjson.dumps([first]))
            await ingestor.ingest_dropped(folder / "one.json")
            pruned = await IngestMeanwhile(store, config).prune_once(
                now_ms_at(config.store_path, days=8)
            )
            assert pruned.done_files == 2  # two.json, filed meanwhile, is past the cut-off too

    anyio.run(run)
    assert superseded_body(config.store_path) == first


def test_old_inbox_rows_go_whatever_their_ids(tmp_path: Path) -> None:
    """Programs may give inbox rows ids of their own, 0 and negative ones too
    (docs/schema.md, "`inbox`"): retention looks at every id."""
    config_path = tmp_path / "dropsync.toml"
    config_path.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\nretain_days = 1\n'
        f'[drop]\npath = "{tmp_path / "drop"}"\n'
    )
    config = load_config(str(config_path))
    ids = [-(2**63), -5, 0, 5, 2**63 - 1]

    async def run() -> int:
        async with await Store.open(config.store_path) as store:
            await store.db.executemany(
                "INSERT INTO inbox (id, collection, key, status, reason, received_at) "
                "VALUES (?, 'contacts', 'a@x', 'rejected', 'bad', 1000)",
                [(row_id,) for row_id in ids],
            )
            await store.db.commit()
            pruned = await Retention(store, config).prune_once(1000 + 2 * DAY_MS)
            return pruned.inbox

    assert anyio.run(run) == len(ids)
    db = sqlite3.connect(config.store_path)
    assert db.execute("SELECT id FROM inbox").fetchall() == []
    db.close()
