"""Bench: N churn-envelope documents through the real ingest path vs the reference.

``python bench/ingest.py --docs 1000000`` prints one JSON line with docs_per_s,
peak_rss_mb, reference_docs_per_s, reference_peak_rss_mb and ratio (real /
reference throughput). Each side runs in its own child process, so peak RSS is
its own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, run_child, write_envelopes


def main() -> None:
    """Generate the file, run both pipelines, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--workdir", help="keep files here instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        source = work / "users.json"
        size = write_envelopes(source, args.docs)
        reference = run_child("reference", str(source), str(work / "reference.db"))
        (work / "real").mkdir()
        real = run_child("ingest_real", str(work / "real"), str(source))
    docs_per_s = real["docs"] / real["seconds"]
    reference_rate = reference["docs"] / reference["seconds"]
    emit(
        {
            "bench": "ingest",
            "docs": args.docs,
            "file_mb": round(size / 1e6, 1),
            "docs_per_s": round(docs_per_s),
            "seconds": round(real["seconds"], 2),
            "peak_rss_mb": round(real["peak_rss_mb"], 1),
            "reference_docs_per_s": round(reference_rate),
            "reference_seconds": round(reference["seconds"], 2),
            "reference_peak_rss_mb": round(reference["peak_rss_mb"], 1),
            "ratio": round(docs_per_s / reference_rate, 3),
        }
    )


if __name__ == "__main__":
    main()
