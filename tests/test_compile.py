"""train.compile: the network compiled in place gives eager's step within rounding, keeps its keys."""

from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from methods.mctformer_parts import mct_losses
from model.mctformer import MCTformer
from utils.runtime import dist


def step(model: MCTformer, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """One seeded training forward + backward: (loss, {name: grad})."""
    model.zero_grad()
    torch.manual_seed(7)
    cls_logits, patch_logits = model(x)
    loss = sum(mct_losses(cls_logits, patch_logits, labels).values())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_network_matches_eager_with_the_same_drop_path_draws():
    torch.manual_seed(0)
    eager = MCTformer("v2", 3, embed_dim=32, depth=2, num_heads=2, img_size=32, drop_path_rate=0.5).train()
    compiled = MCTformer("v2", 3, embed_dim=32, depth=2, num_heads=2, img_size=32, drop_path_rate=0.5).train()
    compiled.load_state_dict(eager.state_dict())
    assert dist.compile_network(compiled, torch.device("cpu")) is compiled
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    for _ in range(2):  # the second call runs the compiled graph without recompiling
        loss_e, grads_e = step(eager, x, labels)
        loss_c, grads_c = step(compiled, x, labels)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
        assert grads_c.keys() == grads_e.keys()
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.manual_seed(7)
    masks = torch.floor(0.5 + torch.rand(4, 4))  # the four drop-path draws of the two blocks
    assert 0 < masks.sum() < 16  # the case drops some branches: equal draws are tested


def test_compile_without_a_cpu_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(dist.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        dist.compile_network(torch.nn.Linear(2, 2), torch.device("cpu"))
