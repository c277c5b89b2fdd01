"""What ``dropsync ingest`` does with one file it is named: ingest it, or say who took it.

A file inside the drop folder is claimed as the daemon claims it (``Ingestor.ingest_dropped``);
one the running daemon (or another ``dropsync ingest``) took first is not an error: the
answer says who took it and where it is now. A file outside the drop folder is read where it
is (``Ingestor.ingest_in_place``). Loaded by ``dropsync ingest`` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dropsync.store import files as ledger

from ..clock import now_ms
from ..errors import FileTaken
from ..ingest.dropfiles import (
    DONE,
    PROCESSING,
    QUARANTINE,
    is_ignored,
    is_locked,
    not_a_file,
)
from ..ingest.ingestor import Ingestor, IngestReport
from ..names import is_text, shown
from ..places import companions, is_within, real
from ..process.runstate import is_fresh, read_runtime


@dataclass(slots=True)
class NotIngested:
    """Why ``dropsync ingest`` did not ingest a file itself, and whether that is a failure."""

    message: str
    failed: bool


async def ingest_named(
    ingestor: Ingestor, path: Path, collection: str | None
) -> IngestReport | NotIngested:
    """``dropsync ingest PATH``: claim and ingest it (inside the drop folder) or read it in place.

    A file of the drop folder that another ingest (the running daemon) took first is
    not an error: the answer says who took it, and where it is now.
    """
    for what, place in companions(ingestor.config.store_path):
        if is_within(real(path), real(place)):  # read as a drop file, and locked meanwhile
            return NotIngested(
                f"{shown(str(path))}: not ingested: it is {what} ({shown(str(place))})",
                failed=True,
            )
    owned = _in_daemons_folder(ingestor, path)
    if owned is not None:
        return await _daemons_file(ingestor, path, *owned)
    if os.path.islink(path) and ingestor.collection_of(path) is None:
        target = real(path)  # a link from elsewhere to a file dropped
        if ingestor.collection_of(target) is not None:
            path = target
    in_drop = ingestor.collection_of(path)
    if in_drop is not None and collection is not None and not _same_name(collection, in_drop):
        return NotIngested(
            f"{shown(str(path))}: not ingested: it is in the collection folder of "
            f"{shown(in_drop)}, whose files are that collection's; --collection names the "
            "collection of a file outside the drop folder (move the file into the folder "
            "of the collection it belongs to)",
            failed=True,
        )
    if in_drop is not None and is_ignored(path) and os.path.lexists(path):
        problem = not_a_file(path)
        return NotIngested(
            f"{shown(str(path))}: "
            + (
                problem
                or "not ingested: the daemon leaves a name that starts with '.' or ends in "
                ".tmp or .part alone (a file being written); rename it when it is complete, "
                "and the daemon takes it"
            ),
            failed=True,
        )
    if in_drop is not None:
        report = await ingestor.ingest_dropped(path) if os.path.lexists(path) else None
        if report is not None:
            return report
        return await _taken_by_other(ingestor, path, in_drop)
    problem = not_a_file(path)
    if problem is not None:
        return NotIngested(f"{shown(str(path))}: {problem}", failed=True)
    collection = collection or path.resolve().parent.name
    if not is_text(collection):
        return NotIngested(
            f"{shown(str(path))}: the collection name {shown(collection)} is not UTF-8: "
            "name the collection with --collection",
            failed=True,
        )
    try:
        return await ingestor.ingest_in_place(path, collection)
    except FileTaken as exc:
        return NotIngested(str(exc), failed=True)


def _same_name(one: str, other: str) -> bool:
    """Whether two collection names are one (a folder's name may come in NFD, from macOS)."""
    from unicodedata import normalize

    return normalize("NFC", one) == normalize("NFC", other)


def _in_daemons_folder(ingestor: Ingestor, path: Path) -> tuple[Path, str, Path] | None:
    """(collection folder, its own folder's name, the path there) when ``path``, or the file
    a link leads to, is inside ``<drop>/<collection>/`` ``.processing/``, ``.done/`` or
    ``.quarantine/``: the daemon's own folders, whose files already have their row."""
    drop = Path(os.path.abspath(ingestor.config.drop_path))
    real_drop = Path(os.path.realpath(drop))
    absolute = Path(os.path.abspath(path))
    for candidate in (absolute, Path(os.path.realpath(absolute.parent)) / absolute.name):
        for base in (drop, real_drop):
            try:
                parts = candidate.relative_to(base).parts
            except ValueError:
                continue
            if len(parts) >= 3 and not parts[0].startswith(".") and parts[1] in _OWN:
                return drop / parts[0], parts[1], drop.joinpath(*parts)
    real = Path(os.path.realpath(absolute))
    if real != absolute and os.path.lexists(real):
        return _in_daemons_folder(ingestor, real)
    return None


_OWN = (PROCESSING, DONE, QUARANTINE)


async def _daemons_file(
    ingestor: Ingestor, path: Path, folder: Path, own: str, place: Path
) -> NotIngested:
    """Why a file of a daemon's own folder is not ingested again (it would get a second
    row, in a collection named after that folder)."""
    name = shown(str(path))
    if not os.path.lexists(place):  # filed meanwhile, or never there
        return NotIngested(f"{name}: no such file", failed=True)
    row = await ingestor.store.call(ledger.row_at, str(place))
    known = f" (file #{row.id}, {row.status})" if row is not None else ""
    if own == PROCESSING:
        if is_locked(place):
            return NotIngested(
                f"{name}: taken by {_who(ingestor)}: being ingested{known}", failed=False
            )
        return NotIngested(
            f"{name}: not ingested: it is in {shown(str(folder / own))}/, where an interrupted "
            f"ingest left it{known}; the daemon's recovery sweep finishes it (while "
            "'dropsync run' runs, and at its start)",
            failed=True,
        )
    return NotIngested(
        f"{name}: not ingested: the daemon filed it in {shown(str(folder / own))}/{known}; "
        f"to ingest it again, copy it into {shown(str(folder))}/",
        failed=True,
    )


def _who(ingestor: Ingestor) -> str:
    state = read_runtime(ingestor.config.store_path)
    return "the running daemon" if state and is_fresh(state, now_ms()) else "another ingest"


async def _taken_by_other(ingestor: Ingestor, path: Path, collection: str) -> NotIngested:
    who = _who(ingestor)

    async def recorded() -> NotIngested | None:
        row = await ingestor.store.call(ledger.latest_named, shown(collection), shown(path.name))
        if row is None:
            return None
        return NotIngested(
            f"{shown(str(path))}: taken by {who}: file #{row.id} ({row.status}), now {row.path}",
            failed=row.status == "quarantined",
        )

    # The other ingest goes forward only: locks the file where it is, commits its row,
    # moves it into .processing/, files it and lets go. Looked at in that order, one of
    # the looks sees it wherever it is (its row stays once committed).
    found = await recorded()
    if found is not None:
        return found
    if is_locked(path):
        return NotIngested(f"{shown(str(path))}: taken by {who}: being claimed", failed=False)
    processing = path.parent / PROCESSING
    stem, suffix = os.path.splitext(path.name)
    for candidate in sorted(processing.glob(f"{stem}*{suffix}")) if processing.is_dir() else []:
        if is_locked(candidate):
            return NotIngested(
                f"{shown(str(path))}: taken by {who}: being ingested, now {shown(str(candidate))}",
                failed=False,
            )
    return await recorded() or NotIngested(f"{shown(str(path))}: no such file", failed=True)
