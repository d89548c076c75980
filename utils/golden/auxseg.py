"""Golden cases of AuxSegNet network, CAM refinement, pseudo labels, losses, inference (issue 22).

Each ``case_<name>(c)`` returns its checks. A case name moves from ``NOT_IMPLEMENTED``
(``utils/golden/cases.py``)
to ``AUXSEG_CASES`` when its component lands.
"""

from __future__ import annotations

from collections.abc import Callable

from utils.golden.harness import CaseData, Check

AUXSEG_CASES: dict[str, Callable[[CaseData], list[Check]]] = {}
