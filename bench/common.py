"""Shared bench helpers: data generation, child processes, resource figures."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_TS = 1_696_821_819_000


def envelope_line(i: int) -> bytes:
    """One churn-envelope document of about 310 bytes (the seed's example shape)."""
    return (
        b'{"data":{"id":%d,"email":"user%d@example.com","phone":"+381638538392",'
        b'"marketingPreferences":{"email":true,"phone":true},'
        b'"systemPreferences":{"email":false,"phone":true},'
        b'"firstName":"John","lastName":"Doe","city":"Limassol"},'
        b'"createdAt":1696814606000,"updatedAt":%d}' % (i, i, BASE_TS + i)
    )


def write_envelopes(path: Path, count: int) -> int:
    """Write ``count`` envelopes as one JSON array, streaming; returns the size in bytes."""
    with path.open("wb") as out:
        out.write(b"[\n")
        for i in range(count):
            if i:
                out.write(b",\n")
            out.write(envelope_line(i))
        out.write(b"\n]\n")
    return path.stat().st_size


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m bench.<module> args`` and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line a bench reports."""
    print(json.dumps(result), flush=True)
