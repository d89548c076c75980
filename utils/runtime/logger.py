"""Run logging: a plain-text log beside the checkpoints, stdout, and TensorBoard."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np


class EarlyRecords(logging.Handler):
    """Holds the ``afa`` logger's warnings from before the run's log file may be written (the work
    directory checks and the resume come first), so that ``setup_text_log`` writes them into it."""

    def __init__(self) -> None:
        """Hold records of level WARNING and above."""
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record for ``setup_text_log``."""
        self.records.append(record)


def hold_early_records() -> EarlyRecords:
    """Attach an ``EarlyRecords`` to the ``afa`` logger until ``setup_text_log`` replaces it."""
    handler = EarlyRecords()
    logging.getLogger("afa").addHandler(handler)
    return handler


def setup_text_log(
    path: str | Path | None, is_main: bool, early: EarlyRecords | None = None
) -> logging.Logger:
    """The ``afa`` logger writing to stdout and ``path`` (main process only; others stay quiet);
    the ``early`` records are written first."""
    logger = logging.getLogger("afa")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if path is not None and is_main:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    for record in early.records if early is not None else ():
        logger.handle(record)
    return logger


class TensorBoard:
    """A SummaryWriter on the main process; every method is a no-op elsewhere or when disabled."""

    def __init__(self, log_dir: str | Path | None) -> None:
        """A SummaryWriter on ``log_dir``, or nothing (other ranks, no TensorBoard wanted)."""
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log each value under its tag at ``step``."""
        if self.writer is None:
            return
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        """Log an (H, W, 3) uint8 picture."""
        if self.writer is not None:
            self.writer.add_image(tag, picture, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the writer."""
        if self.writer is not None:
            self.writer.close()


def format_scores(name: str, s: dict, class_names: list[str] | None = None) -> str:
    """One log line (and optional per-class IoU) of a ``scores_from_confusion`` dict, in percent."""
    line = f"{name} (%): mIoU {100 * s['miou']:.2f}  pAcc {100 * s['pAcc']:.2f}  mAcc {100 * s['mAcc']:.2f}"
    if class_names:
        per_class = ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(class_names, s["iou"]) if not np.isnan(v))
        line += f"\n    {per_class}"
    return line
