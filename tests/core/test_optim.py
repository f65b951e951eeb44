"""Optimizers are built fused where torch allows it (the HF Trainer's default), and the config can say otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tujie_core import ClassificationTask, ConfigError
from tujie_core.optim import build_optimizer


def test_adamw_is_fused_by_default_and_the_config_can_choose() -> None:
    model = nn.Linear(4, 2)
    assert build_optimizer("adamw", model.parameters(), lr=1e-3).defaults["fused"] is True
    assert build_optimizer("adamw", model.parameters(), lr=1e-3, fused=False).defaults["fused"] is False
    loop = build_optimizer("adamw", model.parameters(), lr=1e-3, foreach=True)
    assert loop.defaults["foreach"] is True and not loop.defaults["fused"]
    assert "fused" not in build_optimizer("rmsprop", model.parameters(), lr=1e-3).defaults  # has no fused kernel


def test_parameters_without_fused_kernels_get_torch_default() -> None:
    on_meta = nn.Parameter(torch.zeros(3, device="meta"))
    assert not build_optimizer("adamw", [on_meta], lr=1e-3).defaults["fused"]


def test_param_groups_with_generators_keep_every_parameter() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    groups = [{"params": model[0].parameters()}, {"params": model[1].weight, "lr": 0.1}]
    optimizer = build_optimizer("adamw", groups, lr=1e-3)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 1] and optimizer.defaults["fused"]


def test_fused_adamw_trains_like_the_loop_implementation() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    weights = []
    for fused in (True, False):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        optimizer = build_optimizer("adamw", model.parameters(), lr=1e-2, weight_decay=0.01, fused=fused)
        for _ in range(20):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)


def test_tasks_build_fused_optimizers_and_still_check_options() -> None:
    task = ClassificationTask(
        nn.Linear(4, 3), num_classes=3, optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 0.1}
    )
    optimizer, _ = task.configure_optimizers(total_steps=10)
    assert optimizer.defaults["fused"] and [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    bad = ClassificationTask(nn.Linear(4, 3), num_classes=3, optimizer={"name": "adamw", "lrr": 1e-3})
    with pytest.raises(ConfigError, match="lrr"):
        bad.configure_optimizers(total_steps=10)
