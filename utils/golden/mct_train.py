"""Golden cases of MCTformer training: losses, validation mAP, the train step (issue 20).

Each ``case_<name>(c)`` returns its checks. A case name moves from ``NOT_IMPLEMENTED``
(``utils/golden/cases.py``)
to ``MCT_TRAIN_CASES`` when its component lands.
"""

from __future__ import annotations

from collections.abc import Callable

from utils.golden.harness import CaseData, Check

MCT_TRAIN_CASES: dict[str, Callable[[CaseData], list[Check]]] = {}
