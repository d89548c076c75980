"""Train AuxSegNet for its rounds (spec §5): train, regenerate both label sets, train the next round.

    python scripts/auxseg_rounds.py --config configs/auxsegnet_voc.yaml dataset.root_dir=/data/VOC2012 \
        dataset.saliency_dir=/data/VOC2012/saliency_dss
    python scripts/auxseg_rounds.py --config configs/demo_auxsegnet.yaml       # the demo, a few CPU minutes

Rerunning the same command after a kill (or after ``train.stop_iter``) continues where it stopped:
finished rounds are not redone (``<work_dir.dir>/round_<s>/round_state.json``), a round's training
resumes from its ``last.pt``, label files already written are kept. ``utils/train/auxseg_rounds.py``
has the layout and the round-0 choices.
"""

from __future__ import annotations

import argparse
import sys

from common.errors import ConfigError
from utils.cli import add_debug_flag, run, split_overrides
from utils.config import load_config
from utils.train.auxseg_rounds import run_rounds


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The command line: (known arguments, ``key=value`` config overrides)."""
    parser = argparse.ArgumentParser(
        description="AuxSegNet rounds: train, update the pseudo labels, train again (resumable).",
        epilog="other arguments: key=value config overrides, e.g. auxseg.rounds=2",
    )
    parser.add_argument("--config", required=True, help="an auxsegnet YAML config")
    add_debug_flag(parser)
    return split_overrides(parser, argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the rounds of the command line (``argv``); returns the driver's summary."""
    args, overrides = parse_args(argv)
    cfg = load_config(args.config, overrides)
    if cfg.method != "auxsegnet":
        raise ConfigError(
            f"{args.config}: method={cfg.method}; the rounds are AuxSegNet's (method: auxsegnet)"
        )
    result = run_rounds(cfg)
    if result["stopped"]:
        print(f"stopped in {result['stopped']} (train.stop_iter); rerun the same command to continue")
    else:
        print(f"done: final model {result['final_checkpoint']}")
    return result


if __name__ == "__main__":
    sys.exit(run(main))
