"""The plugin hooks are enough for Opacus: DP-SGD with ghost clipping written against them alone trains through the
Trainer and gives the update that per-sample clipping defines."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tujie_core import ClassificationTask, ConfigError, Plugin, RegressionTask, Trainer

opacus = pytest.importorskip("opacus")
from opacus.grad_sample import GradSampleModuleFastGradientClipping  # noqa: E402
from opacus.optimizers import DPOptimizerFastGradientClipping  # noqa: E402
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping  # noqa: E402

MAX_NORM, LR, BATCH = 0.05, 0.5, 8


class GhostClippingDP(Plugin):
    """DP-SGD with ghost clipping: the model and optimizer wrapped before Fabric's setup, the double backward in
    the backward hook, fed by the per-sample losses the Trainer hands over."""

    needs_sample_losses = True

    def __init__(self, noise_multiplier: float = 0.0) -> None:
        self.noise_multiplier = noise_multiplier

    def wrap(self, trainer, model, optimizer, train_loader):
        self.module = GradSampleModuleFastGradientClipping(model, max_grad_norm=MAX_NORM, use_ghost_clipping=True)
        self.optimizer = DPOptimizerFastGradientClipping(
            optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=MAX_NORM, expected_batch_size=BATCH
        )
        return self.module, self.optimizer, train_loader

    def backward(self, trainer, loss, *, backward, sample_losses=None, weight=1.0) -> None:
        if sample_losses is None:
            raise ConfigError("ghost clipping needs per-sample losses; this task has none")
        DPTensorFastGradientClipping(self.module, self.optimizer, sample_losses, "mean").backward()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 5, generator=generator), torch.randint(0, 3, (BATCH,), generator=generator)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # inputs need no gradient here
def test_ghost_clipping_through_the_plugin_hooks_gives_the_per_sample_clipped_update(clipped_update) -> None:
    x, y = data()
    torch.manual_seed(1)
    reference = nn.Linear(5, 3)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    expected = clipped_update(reference, x, y, MAX_NORM, LR)
    plain = nn.Linear(5, 3)
    plain.load_state_dict(initial)
    nn.functional.cross_entropy(plain(x), y).backward()
    assert not torch.allclose(plain.weight - LR * plain.weight.grad, expected["weight"])  # clipping is active

    model = nn.Linear(5, 3)
    model.load_state_dict(initial)
    task = ClassificationTask(model, num_classes=3, optimizer={"name": "sgd", "lr": LR})
    trainer = Trainer(accelerator="cpu", max_epochs=1, progress="none", plugins=[GhostClippingDP()])
    trainer.fit(task, DataLoader(TensorDataset(x, y), batch_size=BATCH))
    assert trainer.state.step == 1
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-6)


def test_per_sample_losses_average_to_the_loss() -> None:
    x, y = data()
    for task, target in (
        (ClassificationTask(nn.Linear(5, 3), num_classes=3, label_smoothing=0.1), y),
        (ClassificationTask(nn.Linear(5, 1), num_classes=2, mode="binary"), (y > 0).long()),
        (ClassificationTask(nn.Linear(5, 3), num_classes=3, mode="multilabel"), nn.functional.one_hot(y, 3)),
        (RegressionTask(nn.Linear(5, 2), loss="huber"), torch.randn(BATCH, 2)),
    ):
        out = task.step((x, target), sample_losses=True)
        assert out.sample_losses.shape == (BATCH,)
        torch.testing.assert_close(out.sample_losses.mean(), out.loss)
    weighted = ClassificationTask(nn.Linear(5, 3), num_classes=3, class_weights=[1.0, 2.0, 3.0])
    assert weighted.step((x, y), sample_losses=True).sample_losses is None  # a weighted mean has no such split


def test_a_task_without_per_sample_losses_is_refused_by_the_plugin() -> None:
    x, y = data()
    task = ClassificationTask(nn.Linear(5, 3), num_classes=3, class_weights=[1.0, 2.0, 3.0])
    trainer = Trainer(accelerator="cpu", max_epochs=1, progress="none", plugins=[GhostClippingDP()])
    with pytest.raises(ConfigError, match="per-sample losses"):
        trainer.fit(task, DataLoader(TensorDataset(x, y), batch_size=BATCH))
