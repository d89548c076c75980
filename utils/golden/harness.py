"""The golden-case harness: a case file's arrays (``CaseData``) and one compared output (``Check``).

A case directory holds ``<case>.npz`` files (``in/…`` inputs, ``out/…`` expected outputs,
``meta/…`` facts) and a ``model_state.npz`` with the network they were computed with. Tolerances are
those of the golden README: floats ``allclose(rtol=1e-4, atol=1e-5)`` unless a case says otherwise,
label maps ≥ 99.9 % agreement and exact outside the image box.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model import cam


@dataclass
class Check:
    """One compared output: ``kind`` is "float", "label" or "exact"."""

    key: str
    ours: np.ndarray
    ref: np.ndarray
    kind: str = "float"
    rtol: float = 1e-4
    atol: float = 1e-5
    outside_box: np.ndarray | None = None  # bool mask where labels must agree exactly

    def errors(self) -> tuple[float, float]:
        """(max absolute, max relative error); for label maps both are the fraction of disagreeing pixels.

        A NaN on one side only counts as an infinite error; NaN on both sides as none.
        """
        ours, ref = np.asarray(self.ours, np.float64), np.asarray(self.ref, np.float64)
        if ours.shape != ref.shape:
            return float("inf"), float("inf")
        if not ref.size:
            return 0.0, 0.0
        if self.kind == "label":
            wrong = float((ours != ref).mean())
            return wrong, wrong
        diff = np.abs(ours - ref)
        diff = np.where(np.isnan(ours) & np.isnan(ref), 0.0, np.nan_to_num(diff, nan=np.inf))
        rel = diff / np.maximum(np.abs(np.nan_to_num(ref)), self.atol)
        return float(diff.max()), float(rel.max())

    def passed(self) -> bool:
        """Within tolerance: allclose for floats, equal for ``exact``, ≥ 99.9 % agreement (exact outside the
        box) for labels."""
        ours, ref = np.asarray(self.ours), np.asarray(self.ref)
        if ours.shape != ref.shape:
            return False
        if self.kind == "float":
            return bool(np.allclose(ours, ref, rtol=self.rtol, atol=self.atol, equal_nan=True))
        if self.kind == "exact":
            return bool(np.array_equal(ours, ref, equal_nan=ours.dtype.kind == "f"))
        agree = float((ours == ref).mean()) if ref.size else 1.0
        exact = self.outside_box is None or bool(
            np.array_equal(ours[self.outside_box], ref[self.outside_box])
        )
        return agree >= 0.999 and exact


class CaseData:
    """A case's arrays plus the lazily built network of its directory."""

    def __init__(self, path: Path, device: str | torch.device = "cpu") -> None:
        """Load the arrays of ``path``; the network is built on first use (``model``)."""
        self.path = path
        self.device = torch.device(device)
        with np.load(path) as data:
            self.arrays = {k: data[k] for k in data.files}

    def __getitem__(self, key: str) -> np.ndarray:
        """The array stored under ``key``."""
        return self.arrays[key]

    def t(self, key: str) -> Tensor:
        """The array under ``key`` as a tensor on the case's device."""
        return torch.from_numpy(np.array(self.arrays[key])).to(self.device)

    def f(self, key: str) -> float:
        """The scalar under ``key`` as a float."""
        return float(self.arrays[key])

    def i(self, key: str) -> int:
        """The scalar under ``key`` as an int."""
        return int(self.arrays[key])

    def outs(self, prefix: str = "out/") -> Iterator[str]:
        """The keys that start with ``prefix`` (the expected outputs by default)."""
        return (k for k in self.arrays if k.startswith(prefix))

    @cached_property
    def model(self) -> torch.nn.Module:
        """The golden network of the case's directory (``model_state.npz``), in eval mode."""
        from model.weights import build_from_golden_state

        state = self.path.parent / "model_state.npz"
        if not state.exists():
            raise FileNotFoundError(
                f"{self.path.name} needs {state} (the network the case was computed with)"
            )
        return build_from_golden_state(state).eval().to(self.device)


def to_numpy(x: Tensor) -> np.ndarray:
    """A tensor as a NumPy array on the CPU (detached)."""
    return x.detach().cpu().numpy()


def outside_box(box: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bool (B, H, W): True outside each [h0, h1, w0, w1] box."""
    return ~to_numpy(cam.box_mask(torch.from_numpy(box), shape[-2], shape[-1]))
