"""The validation walk of a checkpoint against its bounds (code in utils/diagnostics/affinity.py).

    python scripts/diagnose_affinity.py --config configs/demo.yaml \
        --checkpoint work_dir_demo/checkpoints/last.pt [afa.radius=4 ...]

Per class of ``--split`` (default ``val.split``): IoU of the multi-scale CAM at ``cam.bkg_score`` (the
``cam`` of validation) and at the walk's background 0.35, of the walk with the learned affinity (the
``aff`` of validation) and with a ground-truth affinity (the bound with these CAMs and this window),
and the learned affinity's mean within the class, to other classes, and the share of cross-class
pairs saturated above 0.99. ``key=value`` overrides change what is evaluated (e.g. ``afa.radius``).
"""

from __future__ import annotations

import argparse
import sys

from datasets.voc import class_names
from methods.afa import AFA
from utils.cli import add_debug_flag, run, split_overrides
from utils.diagnostics.affinity import diagnose, report_lines
from utils.evaluation.inputs import labelled_split_loader, method_and_model
from utils.runtime.checkpoint_config import add_checkpoint_arguments, config_for_checkpoint
from utils.runtime.dist import configure_runtime, resolve_device


def main(argv: list[str] | None = None) -> None:
    """Run the affinity diagnostics of the command line (``argv``)."""
    parser = argparse.ArgumentParser(
        description="CAM vs affinity-propagated CAM, with a ground-truth affinity as the bound.",
        epilog="other arguments: key=value config overrides, e.g. afa.radius=4 infer.max_images=20",
    )
    add_checkpoint_arguments(parser, checkpoint_help="a trained checkpoint")
    parser.add_argument("--split", help="split with ground truth (default val.split)")
    add_debug_flag(parser)
    args, overrides = split_overrides(parser, argv)
    configure_runtime()
    cfg = config_for_checkpoint(args.config, overrides, args.checkpoint)
    split = args.split or cfg.val.split
    loader = labelled_split_loader(cfg, split)
    device = resolve_device(cfg.device)
    method, model = method_and_model(cfg, args.checkpoint, device, AFA, "diagnose_affinity.py")
    result = diagnose(model, loader, method.eval, device)
    print(f"{result['num_images']} images of {split}, radius {cfg.afa.radius} (IoU %)")
    names = class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    print("\n".join(report_lines(result, names)))


if __name__ == "__main__":
    sys.exit(run(main))
