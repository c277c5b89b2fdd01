"""``dropsync why``: explain, from the inbox log, why the current version of a key won."""

from __future__ import annotations

from typing import Any

from dropsync.store.history import VersionSeen

from ..clock import format_timestamp


def _when(ts: int | None) -> str:
    return format_timestamp(ts) if ts is not None else "?"


def explain_version(version: VersionSeen, winner: dict[str, Any] | None) -> str:
    """Why this version is or is not the current one (the LWW rule in words)."""
    if version.status == "rejected":
        return f"rejected: {version.reason}"
    if winner is None:
        return "not applied"
    if version.inbox_id == winner["change_id"]:  # both None: the records-only current version
        return "current version"
    deleted = int(version.op == "delete")
    if version.ts is None:
        return version.status
    if version.ts < winner["updated_at"]:
        return f"lost: older timestamp ({_when(version.ts)} < {_when(winner['updated_at'])})"
    if version.ts > winner["updated_at"]:
        return "newer than the current version, but not applied (see status)"
    if version.digest == winner["digest"] and deleted == winner["deleted"]:
        if version.origin == winner["origin"]:
            return "duplicate: identical to the current version"
        return (
            f"same content as the current version; origin tie-break "
            f"({version.origin!r} < {winner['origin']!r})"
        )
    if deleted < winner["deleted"]:
        return "lost tie: same timestamp, a delete beats an upsert"
    return (
        f"lost tie: same timestamp and operation, the larger body digest wins "
        f"({(version.digest or '')[:12]} < {winner['digest'][:12]})"
    )


def why_winner(versions: list[VersionSeen], winner: dict[str, Any] | None) -> str:
    """One sentence on why the current version won."""
    if winner is None:
        return "no current version: every change to this key was rejected or none was seen"
    others = [v for v in versions if v.inbox_id != winner["change_id"] and v.status != "rejected"]
    same_time = [v for v in others if v.ts == winner["updated_at"]]
    if not others:
        return "it is the only valid version seen"
    if not same_time:
        return f"it has the newest timestamp of {len(others) + 1} valid versions"
    return (
        "it ties on timestamp with other versions and wins the tie-break "
        "(delete over upsert, then larger body digest, then origin name)"
    )


def version_json(version: VersionSeen, winner: dict[str, Any] | None) -> dict[str, Any]:
    """A version with its explanation, for ``why --json``."""
    return {
        "inbox_id": version.inbox_id,
        "updated_at": version.ts,
        "updated_at_iso": _when(version.ts) if version.ts is not None else None,
        "op": version.op,
        "origin": version.origin,
        "source": source_of(version),
        "status": version.status,
        "digest": version.digest,
        "received_at": version.received_at,
        "explanation": explain_version(version, winner),
    }


def source_of(version: VersionSeen) -> str:
    """Where a version came from: a drop file and document index, or an inbox row."""
    if version.file_name is not None:
        return f"file {version.file_name} #{version.doc_index}"
    if version.origin == "sql":
        return f"inbox row {version.inbox_id}"
    if version.origin == "drop":
        return "drop file"
    return f"pulled from {version.origin}"
