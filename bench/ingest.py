"""Bench: N churn-envelope documents through the real ingest path vs the reference.

``python bench/ingest.py --docs 1000000`` prints one JSON line with docs_per_s,
peak RSS, reference_docs_per_s, reference_peak_rss_mb and ratio (real /
reference throughput). Each side runs in its own child process, so peak RSS is
its own; the real side's figure is the daemon's peak plus its parser process's
peak (the two are alive together).

These machines are noisy, so the two sides run ``--rounds`` times (default 3),
alternating which goes first; the ratio is of the medians, and each round's
ratio is listed too.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, run_child, write_envelopes


def main() -> None:
    """Generate the file, run both pipelines, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    parser.add_argument("--workdir", help="keep files here instead of a temp dir")
    args = parser.parse_args()
    reals: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        source = work / "users.json"
        size = write_envelopes(source, args.docs)

        def reference() -> None:
            db = work / "reference.db"
            references.append(run_child("reference", str(source), str(db)))
            for leftover in work.glob("reference.db*"):
                leftover.unlink()

        def real() -> None:
            folder = work / "real"
            folder.mkdir()
            reals.append(run_child("ingest_real", str(folder), str(source)))
            shutil.rmtree(folder)

        for number in range(args.rounds):
            for side in (reference, real) if number % 2 == 0 else (real, reference):
                side()
    rates = [r["docs"] / r["seconds"] for r in reals]
    reference_rates = [r["docs"] / r["seconds"] for r in references]
    docs_per_s = statistics.median(rates)
    reference_rate = statistics.median(reference_rates)
    peak = max(r["peak_rss_mb"] + r.get("parser_peak_rss_mb", 0.0) for r in reals)
    ratio = docs_per_s / reference_rate
    emit(
        {
            "bench": "ingest",
            "docs": args.docs,
            "file_mb": round(size / 1e6, 1),
            "rounds": args.rounds,
            "docs_per_s": round(docs_per_s),
            "reference_docs_per_s": round(reference_rate),
            "ratio": round(ratio, 3),
            "round_ratios": [round(a / b, 3) for a, b in zip(rates, reference_rates, strict=True)],
            "docs_per_s_each": [round(r) for r in rates],
            "reference_docs_per_s_each": [round(r) for r in reference_rates],
            "peak_rss_mb": round(peak, 1),
            "daemon_peak_rss_mb": round(max(r["peak_rss_mb"] for r in reals), 1),
            "parser_peak_rss_mb": round(max(r.get("parser_peak_rss_mb", 0.0) for r in reals), 1),
            "reference_peak_rss_mb": round(max(r["peak_rss_mb"] for r in references), 1),
            "targets": {"ratio": 0.8, "peak_rss_mb": 100},
            "met": {"ratio": ratio >= 0.8, "peak_rss": peak <= 100},
        }
    )


if __name__ == "__main__":
    main()
