"""Verify an install against golden cases of the authors' implementation.

    python scripts/check_golden.py DIR [--strict] [--only NAME ...] [--device cuda]

Runs every ``*.npz`` case in DIR (with the ``model_state.npz`` the cases were computed with) through
this implementation and prints one line per case: name, worst absolute and relative error, PASS or
FAIL. Cases of components not built yet are listed as PENDING (``--strict`` counts them as
failures). ``--device cuda`` runs the cases on the GPU (TF32 off, so that the CPU tolerances
apply). Exits 0 only if every case that ran passed; 2 if there is nothing to run or no such device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from utils.cli import add_debug_flag, run
from utils.golden.cases import case_files, run_case
from utils.runtime.dist import configure_runtime, resolve_device


def build_parser() -> argparse.ArgumentParser:
    """The command line: the case directory, ``--strict``, ``--only``, ``--verbose``, ``--device``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--strict", action="store_true", help="treat pending (not yet implemented) cases as failures"
    )
    parser.add_argument("--only", nargs="*", default=None, help="case file stems to run")
    parser.add_argument("--verbose", action="store_true", help="one line per compared output")
    add_debug_flag(parser)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    return parser


def check_case(path: Path, device: torch.device, verbose: bool) -> str:
    """Run one case file and print its line (and its outputs' lines when it fails or ``verbose``);
    returns "pass", "fail" or "pending"."""
    start = time.perf_counter()
    try:
        checks = run_case(path, device)
    except NotImplementedError as err:
        print(f"{path.stem:32s} {'':>10s} {'':>10s}  PENDING  ({err})")
        return "pending"
    except Exception as err:  # a crash is a failure of that case, reported with its cause
        print(f"{path.stem:32s} {'':>10s} {'':>10s}  FAIL     ({type(err).__name__}: {err})")
        return "fail"
    if not checks:
        print(f"{path.stem:32s} {'':>10s} {'':>10s}  FAIL     (no out/ entries to compare)")
        return "fail"
    ok = all(ch.passed() for ch in checks)
    abs_err = max(ch.errors()[0] for ch in checks)
    rel_err = max(ch.errors()[1] for ch in checks)
    status = "PASS" if ok else "FAIL"
    seconds = time.perf_counter() - start
    print(f"{path.stem:32s} abs {abs_err:9.2e} rel {rel_err:9.2e}  {status:7s}  ({seconds:.1f}s)")
    for ch in checks if (verbose or not ok) else []:
        a, r = ch.errors()
        verdict = "ok" if ch.passed() else "MISMATCH"
        print(f"    {ch.key:30s} abs {a:9.2e} rel {r:9.2e}  {verdict} [{ch.kind}]")
    return "pass" if ok else "fail"


def main(argv: list[str] | None = None) -> int:
    """Check the golden cases of the command line (``argv``); 1 if one fails (or is pending with
    ``--strict``), else 0."""
    args = build_parser().parse_args(argv)
    configure_runtime()
    device = resolve_device(args.device)  # a ConfigError (exit 2) for a device that is not there
    if device.type == "cuda":  # TF32 matmuls and convolutions would exceed the float32 tolerances
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    files = case_files(args.directory)
    if args.only:
        files = [f for f in files if f.stem in args.only]
    if not files:
        print(f"no golden cases found in {args.directory}", file=sys.stderr)
        return 2
    results = {path.stem: check_case(path, device, args.verbose) for path in files}
    failed = [stem for stem, r in results.items() if r == "fail"]
    pending = [stem for stem, r in results.items() if r == "pending"]
    ran = len(files) - len(pending)
    print(
        f"\n{ran - len(failed)}/{ran} cases passed, {len(pending)} pending"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed or (args.strict and pending) else 0


if __name__ == "__main__":
    sys.exit(run(main))
