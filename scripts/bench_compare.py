"""Interleaved before/after timing of ``scripts/benchmark.py`` across code trees.

    python scripts/bench_compare.py --rounds 2 base=/tmp/base after=. "fast=.:--fast" \
        -- train-step --crop 256 --iters 2 --warmup 1

Each ``LABEL=TREE[:EXTRA ARGS]`` is a checkout (e.g. ``git worktree add /tmp/base 0f0b45e`` with the
benchmark files copied in); every round runs each tree once, in order, in its own process with one
thread (``--threads N``: N, and the ratio is then of wall time), so a shared machine's load falls on
all of them alike (``--env KEY=VALUE`` sets the environment of every run). Prints per-run times
and, per label, the median process CPU time and wall time per iteration, the ratio to the first
label, the peak memory and the median stage breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def run_once(
    tree: str, extra: list[str], bench: list[str], env_extra: dict[str, str], threads: int = 1
) -> dict:
    """One ``scripts/benchmark.py`` process in ``tree`` with ``threads`` threads: its JSON record."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS=str(threads), **env_extra)
    cmd = [sys.executable, "scripts/benchmark.py", *bench, *extra, "--json", "--threads", str(threads)]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved comparison of the command line (``argv``); 0 on success."""
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="threads of every run (default 1; ratios then use CPU time)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of every run, e.g. MALLOC_TRIM_THRESHOLD_=1073741824 to give all trees the "
        "same allocator settings (ours then skips its own, utils/runtime/dist.py: retain_freed_memory)",
    )
    parser.add_argument("variants", nargs="+", help="LABEL=TREE[:EXTRA ARGS]")
    args = parser.parse_args(argv[:split])
    bench = argv[split + 1 :]
    env_extra = dict(item.split("=", 1) for item in args.env)
    variants = []
    for spec in args.variants:
        label, rest = spec.split("=", 1)
        tree, _, extra = rest.partition(":")
        variants.append((label, tree, extra.split()))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    for r in range(args.rounds):
        for label, tree, extra in variants:
            res = run_once(tree, extra, bench, env_extra, args.threads)
            runs[label].append(res)
            print(
                r,
                label,
                "cpu",
                [round(t, 3) for t in res["cpu_times"]],
                "wall",
                [round(t, 3) for t in res["times"]],
                flush=True,
            )
    first = None
    for label, results in runs.items():
        cpu = statistics.median(t for res in results for t in res["cpu_times"])
        wall = statistics.median(t for res in results for t in res["times"])
        key = cpu if args.threads == 1 else wall  # with several threads the wall time is the figure
        first = first or key
        stages = {
            k: round(statistics.median(r["breakdown"][k] for r in results), 3)
            for k in results[0]["breakdown"]
        }
        peak = max(r["peak_mem_bytes"] for r in results) / 2**20
        ratio = first / key
        print(f"{label:10s} cpu {cpu:.3f} s  wall {wall:.3f} s  x{ratio:.2f}  peak {peak:.0f} MiB  {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
