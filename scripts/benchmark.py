"""Benchmarks of the training step, validation, inference, PAR and the random walk.

    python scripts/benchmark.py train-step --backbone mit_b1 --crop 256 --batch 2 --device cpu --json

Each subcommand runs ``--warmup`` untimed and ``--iters`` timed calls of the project's own functions
on seeded random inputs and prints the median seconds per call, images per second, peak memory and a
per-stage breakdown of the training step; with ``--json`` the last line is one JSON object with all
of it. ``--fast`` turns on the documented fast options (docs/BENCHMARKS.md). See docs/BENCHMARKS.md
for the measured figures and the commands behind them.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import utils.bench.runs  # noqa: F401  (registers the built-in benchmarks)
from utils.bench.harness import SUBCOMMANDS
from utils.runtime.dist import configure_runtime


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per registered benchmark, their shared options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subs = parser.add_subparsers(dest="command", required=True)
    for sub in SUBCOMMANDS.values():
        p = subs.add_parser(sub.name, help=sub.help, description=sub.help)
        p.add_argument("--method", default="afa", help="the method (config key method; default afa)")
        p.add_argument("--backbone", default="mit_b1", help="encoder variant (random weights)")
        p.add_argument("--crop", type=int, default=256, help="crop / image size (multiple of 16)")
        p.add_argument("--batch", type=int, default=2, help="images per call (per-process batch)")
        p.add_argument("--iters", type=int, default=5, help="timed calls; the median is reported")
        p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
        p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
        p.add_argument(
            "--amp", choices=("none", "bf16"), default="none", help="autocast of the network passes"
        )
        p.add_argument("--fast", action="store_true", help="the documented fast options (not the reference)")
        p.add_argument(
            "--compile", action="store_true", help="train.compile: torch.compile the network (train-step)"
        )
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
        p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
        if sub.add_arguments is not None:
            sub.add_arguments(p)
    return parser


def summary(name: str, res: dict) -> str:
    """Human-readable lines of a result."""
    lines = [
        f"{name}: {res['sec_per_iter']:.4f} s/iter (median of {len(res['times'])}), "
        f"{res['images_per_sec']:.2f} images/s, peak memory {res['peak_mem_bytes'] / 2**20:.0f} MiB"
    ]
    total = sum(res["breakdown"].values())
    for stage, sec in res["breakdown"].items():
        if total > 0:
            lines.append(f"  {stage:18s} {sec:8.4f} s  {100 * sec / res['sec_per_iter']:5.1f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark of the command line (``argv``) and print its record; 0 on success."""
    args = build_parser().parse_args(argv)
    configure_runtime()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = SUBCOMMANDS[args.command].run(args)
    res = {"subcommand": args.command, **res}
    print(summary(args.command, res))
    if args.json:
        print(json.dumps(res, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
