# ruff: noqa: E501 -- the table of cases reads best one case a line
"""Campaign 4: hostile drop files, made here, one after another, each followed by a good file.

For each case the campaign drops the hostile thing, then a good file, and waits (bounded) until
the good file is in ``records`` and the hostile one is settled. It then checks what an operator
expects: a bad file ends in ``.quarantine/`` with a reason (in its receipt and its ledger row),
a good one in ``.done/``, an ignored name is left alone, nothing stays in ``.processing/``, no
ledger row is left ``processing``, nothing outside the drop folder is read, and the daemon is
still running. A daemon that dies is recorded against the case and started again (what it
died on is moved aside first, so one case cannot take the others down with it). The daemon
runs under an address-space limit, so a case that makes it take all the memory it can fails
as a MemoryError instead of taking the machine's.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson
from dropsync.daemon.names import shown

from tests.harness import oracle
from tests.harness.kill import CampaignResult
from tests.harness.oracle import Violation
from tests.harness.world import World, make_world

ADDRESS_SPACE_LIMIT = 3 << 30
SETTLE_GRACE_S = 3.0
BEING_INGESTED = "its ledger row is still 'processing'"
MEMORY_TARGET_MB = 100.0  # bench/RESULTS.md: ingest peak RSS
SECRET_OUTSIDE = "outside-the-drop-folder-7c1f0e"
TS = 1_700_000_000_000


def _start_limited(world: World) -> None:
    """Start the daemon, then limit its address space (its parser processes inherit it)."""
    world.daemon.spawn()
    process = world.daemon.process
    assert process is not None
    resource.prlimit(process.pid, resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    world.daemon.wait_for("daemon_ready")


def doc(email: str = "h@example.com", ts: object = TS, **extra: object) -> bytes:
    """One plain contact document as JSON bytes."""
    return orjson.dumps({"email": email, "updated_at": ts, **extra})


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """A value nested ``depth`` deep."""
    return opener * depth + closer * depth


@dataclass
class Case:
    """One hostile input; ``make`` writes it into the collection folder and returns its name."""

    name: str
    make: Callable[[Path], str]
    expect: str  # quarantined | done | handled (either) | ignored
    during: Callable[[World, Path], None] | None = None  # while the daemon reads it
    collection: str = "contacts"
    rows: int = 1  # ledger rows expected under its name (2 for a name dropped twice)
    problems: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0  # the daemon's peak RSS once this case was done


def _write(name: str, content: bytes) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        temporary = folder / ".hostile.part"
        temporary.write_bytes(content)
        os.rename(temporary, folder / name)
        return name

    return make


def _write_bytes_name(raw_name: bytes, content: bytes) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        target = os.fsencode(folder) + b"/" + raw_name
        temporary = os.fsencode(folder) + b"/.raw-name.part"
        with open(temporary, "wb") as handle:
            handle.write(content)
        os.rename(temporary, target)
        return os.fsdecode(raw_name)

    return make


def _special(name: str, kind: str, outside: Path) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        path = folder / name
        if kind == "dir":
            path.mkdir()
            (path / "inner.json").write_bytes(doc("inner@example.com"))
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink":
            path.symlink_to(outside)
        return name

    return make


def _growing(name: str, content: bytes) -> Callable[[Path], str]:
    """A file that goes on growing (through a handle kept open) after it is dropped."""

    def make(folder: Path) -> str:
        temporary = folder / ".hostile.part"
        temporary.write_bytes(content)
        handle = temporary.open("ab")
        os.rename(temporary, folder / name)
        threading.Thread(target=_keep_appending, args=(handle,), daemon=True).start()
        return name

    return make


def _keep_appending(handle: BinaryIO) -> None:
    with handle:
        for i in range(40):
            handle.write(b',{"email":"grow%d@example.com","updated_at":%d}' % (i, TS + i))
            handle.flush()
            time.sleep(0.01)
        handle.write(b"]")


def _delete_when_claimed(world: World, path: Path) -> None:
    claimed = path.parent / ".processing" / path.name
    _when_exists(claimed, claimed.unlink)


def _remove_collection_when_claimed(world: World, path: Path) -> None:
    claimed = path.parent / ".processing" / path.name
    _when_exists(claimed, lambda: shutil.rmtree(path.parent, ignore_errors=True))


def _when_exists(path: Path, action: Callable[[], None], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.suppress(OSError):
                action()
            return
        time.sleep(0.001)


def _big_array(count: int) -> bytes:
    return b"[" + b",".join(doc(f"big{i}@example.com", TS + i) for i in range(count)) + b"]"


def cases(outside: Path, many_keys: int) -> list[Case]:
    """The hostile inputs (at least 40)."""
    good = doc()
    big = _big_array(20_000)
    wide = (
        b'{"email":"wide@example.com","updated_at":1700000000000,'
        + b",".join(b'"k%d":%d' % (i, i) for i in range(many_keys))
        + b"}"
    )
    return [
        Case("invalid JSON", _write("invalid.json", b'{"email": "x@example.com", '), "quarantined"),
        Case("truncated array", _write("truncated.json", b"[" + good + b',{"email"'), "quarantined"),
        Case("control character raw in a string", _write("ctl.json", b'{"email":"a\x01b"}'), "quarantined"),
        Case("garbage between objects", _write("garbage.json", good + b" ?! " + good), "quarantined"),
        Case("UTF-8 BOM", _write("bom.json", b"\xef\xbb\xbf" + doc("bom@example.com")), "handled"),
        Case("UTF-16", _write("utf16.json", doc("u16@example.com").decode().encode("utf-16")), "quarantined"),
        Case("non-UTF-8 bytes in a string", _write("latin1.json", b'{"email":"caf\xe9@example.com","updated_at":1700000000001}'), "quarantined"),
        Case("lone surrogate escape", _write("surrogate.json", b'{"email":"s@example.com","updated_at":1700000000001,"x":"\\ud800"}'), "quarantined"),
        Case("overlong UTF-8 sequence", _write("overlong.json", b'{"email":"o\xc0\xafx@example.com","updated_at":1700000000001}'), "quarantined"),
        Case("NaN", _write("nan.json", b'{"email":"nan@example.com","updated_at":1700000000001,"v":NaN}'), "quarantined"),
        Case("Infinity", _write("inf.json", b'{"email":"inf@example.com","updated_at":1700000000001,"v":-Infinity}'), "quarantined"),
        Case("1e400", _write("e400.json", b'[{"email":"e4@example.com","updated_at":1700000000001,"v":1e400},' + good + b"]"), "quarantined"),
        Case("400-digit number kept exactly", _write("digits.json", b'{"email":"digits@example.com","updated_at":1700000000001,"v":' + b"7" * 400 + b"}"), "done"),
        Case("nesting 10,000 deep", _write("deep10k.json", b'{"email":"d@example.com","updated_at":1700000000001,"v":' + nested(10_000) + b"}"), "quarantined"),
        Case("nesting 100,000 deep", _write("deep100k.json", nested(100_000)), "quarantined"),
        Case("objects nested 10,000 deep", _write("deepobj.json", b'{"a":' * 10_000 + b"1" + b"}" * 10_000), "quarantined"),
        Case("an object with very many keys", _write("wide.json", wide), "handled"),
        Case("duplicate keys", _write("dupkeys.json", b'{"email":"a@example.com","email":"b@example.com","updated_at":1700000000001}'), "handled"),
        Case("top-level string", _write("string.json", b'"hello"'), "quarantined"),
        Case("top-level number", _write("number.json", b"42"), "quarantined"),
        Case("top-level null", _write("null.json", b"null"), "quarantined"),
        Case("array of arrays", _write("arrays.json", b"[[1,2],[3]]"), "quarantined"),
        Case("missing key field", _write("nokey.json", b'{"updated_at":1700000000001}'), "quarantined"),
        Case("empty key", _write("emptykey.json", doc("")), "quarantined"),
        Case("null key", _write("nullkey.json", b'{"email":null,"updated_at":1700000000001}'), "quarantined"),
        Case("float key", _write("floatkey.json", b'{"email":1.5,"updated_at":1700000000001}'), "quarantined"),
        Case("mixed key types", _write("mixed.json", b'[{"email":1,"updated_at":1700000000001},{"email":"m@example.com","updated_at":1700000000002},{"email":[1],"updated_at":1700000000003}]'), "quarantined"),
        Case("timestamp far ahead", _write("future.json", doc("f@example.com", "2999-01-01T00:00:00Z")), "quarantined"),
        Case("timestamp before 1970", _write("past.json", doc("p@example.com", "1969-07-20T20:17:00Z")), "quarantined"),
        Case("negative timestamp", _write("negative.json", doc("n@example.com", -5)), "quarantined"),
        Case("epoch seconds as the timestamp", _write("seconds.json", doc("sec@example.com", 1796648449)), "quarantined"),
        Case("a key holding U+0000", _write("nul.json", doc("d\x00rop@example.com")), "quarantined"),
        Case("unparseable timestamp", _write("when.json", doc("w@example.com", "yesterday")), "quarantined"),
        Case("0 bytes", _write("empty.json", b""), "quarantined"),
        Case("only whitespace", _write("blank.json", b" \n\t "), "quarantined"),
        Case("NDJSON with a bad line", _write("lines.ndjson", good + b"\n{nope\n" + doc("l@example.com") + b"\n"), "quarantined"),
        Case("unsupported file type", _write("notes.txt", b"hello"), "quarantined"),
        Case("huge string value", _write("bigstring.json", doc("s5@example.com", v="x" * (5 << 20))), "handled"),
        Case("a directory named x.json", _special("x.json", "dir", outside), "quarantined"),
        Case("a symlink out of the drop folder", _special("link.json", "symlink", outside), "quarantined"),
        Case("a FIFO", _special("fifo.json", "fifo", outside), "quarantined"),
        Case("a name with ..", _write("a..b.json", doc("dots@example.com")), "done"),
        Case("a name starting with ..", _write("..hidden.json", good), "ignored"),
        Case("a name with a newline", _write("new\nline.json", doc("nl@example.com")), "done"),
        Case("a name with non-UTF-8 bytes", _write_bytes_name(b"caf\xe9.json", doc("raw@example.com")), "quarantined"),
        Case("a file that grows while read", _growing("grows.json", big[:-1]), "handled"),
        Case("a file deleted while read", _write("deleted.json", big), "handled", during=_delete_when_claimed),
        Case("its collection folder removed while read", _write("orphan.json", big), "handled", during=_remove_collection_when_claimed, collection="doomed"),
        Case("the same name again", _write("a..b.json", doc("dots2@example.com")), "done", rows=2),
    ]  # fmt: skip


def _settled(world: World, case: Case, name: str) -> str | None:
    """None once the case's file has left the drop folder and ``.processing/``, and its
    ledger row is finished."""
    folder = world.drop / case.collection
    if case.expect != "ignored" and os.path.lexists(folder / name):
        return "still waiting in the drop folder"
    filed = shown(name)
    rows = oracle.StoreView(world.store).files.get((case.collection, filed), [])
    if any(row[2] == "processing" for row in rows):
        return BEING_INGESTED
    if os.path.lexists(folder / ".processing" / name):
        return "still in .processing/"
    if (
        not rows
        and os.path.lexists(folder / ".quarantine" / filed)
        and not os.path.lexists(folder / ".quarantine" / f"{filed}.error.json")
    ):
        return "in .quarantine/ without its ledger row or receipt"
    return None


def _check(world: World, case: Case, name: str) -> None:
    folder = world.drop / case.collection
    view = oracle.StoreView(world.store)
    filed = shown(name)  # a name that is not UTF-8 is filed (and recorded) escaped
    rows = view.files.get((case.collection, filed), [])
    if any(row[2] == "processing" for row in rows):
        case.problems.append("its ledger row is left 'processing'")
    if len(rows) > case.rows:
        case.problems.append(f"{len(rows)} ledger rows")
    quarantined = os.path.lexists(folder / ".quarantine" / filed)
    done = os.path.lexists(folder / ".done" / filed)
    if case.expect == "ignored":
        if rows or not os.path.lexists(folder / name):
            case.problems.append("a name the docs say is ignored was taken")
        return
    if case.expect in ("quarantined", "handled") and quarantined:
        receipt = folder / ".quarantine" / f"{filed}.error.json"
        reason = rows[-1][-1] if rows else None
        if not receipt.is_file() and not reason:
            case.problems.append("quarantined without a receipt or a reason")
    elif case.expect in ("done", "handled") and done:
        pass
    elif case.during is not None:
        pass  # deleted (or its folder removed) under it: the daemon had to stay up, move on
    else:
        where = "quarantined" if quarantined else "done" if done else "nowhere"
        case.problems.append(f"expected {case.expect}, ended {where}")


def _rescue(world: World) -> None:
    """After a death: move what is in ``.processing/`` aside, so the next start is clean."""
    aside = world.root / "aside"
    aside.mkdir(exist_ok=True)
    for processing in world.drop.glob("*/.processing"):
        for path in processing.iterdir():
            os.rename(path, aside / f"{processing.parent.name}-{path.name}")


def status_ms(world: World) -> float:
    """How long ``dropsync status --json`` took (it must answer, exit 0, with JSON)."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            "status",
            "--json",
            "--config",
            str(world.daemon.config_path),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    elapsed = (time.perf_counter() - started) * 1000
    orjson.loads(done.stdout)
    return elapsed


def peak_rss_mb(pid: int) -> float:
    """A live process's peak resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def hostile_files(
    root: Path,
    seed: int,
    *,
    many_files: int = 2000,
    many_keys: int = 1_000_000,
    case_timeout: float = 60.0,
) -> tuple[CampaignResult, list[Case]]:
    """Campaign 4; returns the result (figures, whole-run violations) and each case's problems."""
    result = CampaignResult(seed)
    world = make_world(root, seed)
    outside = root / "outside.json"
    outside.write_bytes(doc(SECRET_OUTSIDE))
    all_cases = cases(outside, many_keys)
    statuses: list[float] = []
    peak = 0.0
    started = time.monotonic()
    try:
        _start_limited(world)
        for number, case in enumerate(all_cases):
            folder = world.drop / case.collection
            folder.mkdir(parents=True, exist_ok=True)
            name = case.make(folder)
            if case.during is not None:
                case.during(world, folder / name)
            good_key = f"good{number}@example.com"
            (world.drop / "contacts" / f".good{number}.part").write_bytes(doc(good_key, TS))
            os.rename(
                world.drop / "contacts" / f".good{number}.part",
                world.drop / "contacts" / f"good{number}.json",
            )
            deadline = time.monotonic() + case_timeout
            grace: float | None = None  # set while the good file is in and this one is idle
            waiting: str | None = "not looked yet"
            while time.monotonic() < min(deadline, grace or deadline):
                process = world.daemon.process
                if process is not None and process.poll() is not None:
                    case.problems.append(f"the daemon died (exit {process.returncode})")
                    world.check_alive()
                    _rescue(world)
                    _start_limited(world)
                    continue
                waiting = _settled(world, case, name)
                good_in = oracle.StoreView(world.store).records.get(("contacts", good_key))
                if waiting is None and good_in:
                    break
                if good_in and waiting != BEING_INGESTED:
                    # The good file came after it and is in, and it is not being ingested:
                    # give it a moment, not the timeout.
                    grace = grace or time.monotonic() + SETTLE_GRACE_S
                else:
                    grace = None
                time.sleep(0.02)
            else:
                after = (
                    f"{SETTLE_GRACE_S:.0f} s after the good file"
                    if grace
                    else f"{case_timeout:.0f} s"
                )
                case.problems.append(
                    f"not settled {after} ({waiting or 'the good file after it was not ingested'})"
                )
                world.kill()
                _rescue(world)
                _start_limited(world)
            _check(world, case, name)
            if number % 5 == 0:
                statuses.append(status_ms(world))
            if world.daemon.process is not None and world.daemon.process.poll() is None:
                peak = max(peak, peak_rss_mb(world.daemon.process.pid))
            case.peak_rss_mb = peak
        # 20,000 small files at once (CI: fewer): all ingested, the daemon answering meanwhile.
        swarm = world.drop / "swarm"
        swarm.mkdir()
        staging = world.root / "staging"
        staging.mkdir()
        for i in range(many_files):
            envelope = {"data": {"id": i}, "createdAt": TS, "updatedAt": TS + i}
            (staging / f"s{i:05d}.json").write_bytes(orjson.dumps(envelope))
        for i in range(many_files):
            os.rename(staging / f"s{i:05d}.json", swarm / f"s{i:05d}.json")
        deadline = time.monotonic() + max(120.0, many_files / 20)
        while time.monotonic() < deadline:
            done = swarm / ".done"
            if done.is_dir() and len(os.listdir(done)) >= many_files:
                break
            statuses.append(status_ms(world))
            time.sleep(0.5)
        else:
            result.add([Violation("liveness", f"not all of {many_files} small files ingested")])
        if world.daemon.process is not None and world.daemon.process.poll() is None:
            peak = max(peak, peak_rss_mb(world.daemon.process.pid))
        world.check_alive()
        code = world.stop()
        if code != 0:
            result.add([Violation("daemon_survives", f"SIGTERM ended the daemon with exit {code}")])
        result.add([oracle.error_log_violation(e) for e in world.error_lines()])
        for path in (world.store, world.root / "store.db-wal"):
            if path.exists() and SECRET_OUTSIDE.encode() in path.read_bytes():
                result.add([Violation("not_read", "the file the symlink points at was read")])
    finally:
        world.close()
    ordered = sorted(statuses)
    result.figures.update(
        cases=len(all_cases),
        cases_failed=sum(1 for c in all_cases if c.problems),
        files_tried=len(all_cases) + many_files,
        daemon_peak_rss_mb=round(peak, 1),
        status_ms_p50=round(ordered[len(ordered) // 2], 1) if ordered else None,
        status_ms_max=round(ordered[-1], 1) if ordered else None,
        seconds=round(time.monotonic() - started, 1),
    )
    for case in all_cases:
        result.add([Violation("hostile_case", f"{case.name}: {p}") for p in case.problems])
    over = [c for c in all_cases if c.peak_rss_mb > MEMORY_TARGET_MB]
    if over:
        result.add(
            [
                Violation(
                    "memory",
                    f"the daemon's peak RSS passed {MEMORY_TARGET_MB:.0f} MB at case "
                    f"{over[0].name!r} ({over[0].peak_rss_mb:.0f} MB; at the end {peak:.0f} MB)",
                )
            ]
        )
    return result, all_cases
