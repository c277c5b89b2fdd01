"""Reliability campaigns at full size (docs/campaigns.md); CI runs the same at a smaller size.

    python bench/campaign.py kill --kills 200          # campaign 1: SIGKILL anywhere
    python bench/campaign.py backlog --files 300       # campaign 2: start on a backlog
    python bench/campaign.py faults --seconds 300      # campaign 3: provider faults, outage
    python bench/campaign.py hostile --files 20000     # campaign 4: hostile drop files

Each run prints its seed first (``--seed`` repeats a run's load and schedule), then every
violation found and its figures (with what the last settle waited on, every 10 s, when it
took that long), and last one JSON line; it exits 1 if anything was violated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit
from tests.harness import oracle
from tests.harness.backlog import start_on_backlog
from tests.harness.faults import provider_faults
from tests.harness.hostile import hostile_files
from tests.harness.kill import CampaignResult, kill_anywhere
from tests.harness.world import campaign_seed


def run(args: argparse.Namespace, root: Path, seed: int) -> CampaignResult:
    """The chosen campaign at the chosen size."""
    if args.campaign == "kill":
        return kill_anywhere(root, seed, args.kills, settle_timeout=args.settle_timeout)
    if args.campaign == "backlog":
        results = [
            start_on_backlog(
                root / name,
                seed,
                waiting=args.files,
                processing=max(1, args.files // 10),
                rows=args.files * 5,
                kill_midway=kill,
                settle_timeout=args.settle_timeout,
            )
            for name, kill in (("cold", False), ("killed", True))
        ]
        merged = CampaignResult(seed)
        for part, result in zip(("cold", "killed"), results, strict=True):
            merged.add(result.violations, prefix=f"{part}: ")
            merged.figures[part] = result.figures
        return merged
    if args.campaign == "hostile":
        result, _ = hostile_files(root, seed, many_files=args.files, many_keys=1_000_000)
        return result
    return provider_faults(
        root,
        seed,
        seconds=args.seconds,
        outage_s=args.outage,
        settle_timeout=args.settle_timeout,
    )


def main() -> None:
    """Parse the command line, run one campaign, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("campaign", choices=("kill", "backlog", "faults", "hostile"))
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--files", type=int, default=300, help="backlog; hostile: the swarm")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--outage", type=float, default=120.0, help="outage length (faults)")
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder, keep it")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else campaign_seed()
    print(f"campaign {args.campaign}: seed {seed}", flush=True)
    started = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep, seed)
    else:
        with tempfile.TemporaryDirectory(prefix=f"campaign-{args.campaign}-") as folder:
            result = run(args, Path(folder), seed)
    print(oracle.report(result.violations, seed, most=len(result.violations)), flush=True)
    emit(
        {
            "bench": f"campaign_{args.campaign}",
            "seed": seed,
            "violations": len(result.violations),
            "by_invariant": oracle.summarise(result.violations),
            "figures": result.figures,
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    sys.exit(1 if result.violations else 0)


if __name__ == "__main__":
    main()
