"""Exponential moving average of a model's weights (Polyak averaging, as timm's ``ModelEmaV3`` and Lightning's
``WeightAveraging``): training updates the live weights, evaluation and the saved model use the average, which is
usually smoother and less sensitive to the seed than the last step's weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class WeightEMA:
    """``average ← decay·average + (1 − decay)·weights`` after every optimizer step.

    Floating-point parameters and buffers are averaged in float32; integer buffers (step counters, position ids)
    follow the live model. With ``warmup`` the decay starts low, ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so the first random-ish weights fade out quickly (TensorFlow's ``num_updates`` rule).
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.weights: dict[str, Tensor] = {k: _average_copy(v) for k, v in module.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for key, value in module.state_dict().items():
            average = self.weights[key]
            if average.is_floating_point():
                average.lerp_(value.detach().to(average.dtype), weight)
            else:
                average.copy_(value)
        self.updates += 1

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        """Run the block with the averaged weights in ``module``; the live weights come back afterwards."""
        live = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.weights)
        try:
            yield
        finally:
            module.load_state_dict(live)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "weights": self.weights}  # decay and warmup come from the config

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for key, value in state["weights"].items():
            self.weights[key].copy_(value)


def _average_copy(value: Tensor) -> Tensor:
    value = value.detach()
    return value.float().clone() if value.is_floating_point() else value.clone()
