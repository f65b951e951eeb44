"""The core Trainer: learning, exact gradient accumulation, callbacks, plugins, evaluation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tujie_core import (
    Callback,
    ClassificationTask,
    ConfigError,
    EarlyStopping,
    Plugin,
    RegressionTask,
    Trainer,
    TrainingError,
    WeightEMA,
    create_model,
)


def quiet(**kw) -> Trainer:
    return Trainer(accelerator="cpu", progress="none", **kw)


def test_fit_learns_and_writes_metrics_log(blob_loaders, tmp_path: Path) -> None:
    train, val = blob_loaders
    task = ClassificationTask(
        create_model("mlp", input_shape=(4,), num_outputs=3, hidden=[16]),
        num_classes=3,
        optimizer={"name": "adamw", "lr": 0.05},
    )
    trainer = quiet(max_epochs=8, run_dir=tmp_path, monitor="val/accuracy", mode="max")
    last = trainer.fit(task, train, val)
    assert last["val/accuracy"] >= 0.9
    assert last["train/loss"] < trainer.state.history[0]["train/loss"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert trainer.checkpoint_callback.best == max(r["val/accuracy"] for r in records)


def _accumulation_run(batch_size: int, accumulate: int, data: TensorDataset) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    task = RegressionTask(model, optimizer={"name": "sgd", "lr": 0.1})
    trainer = quiet(max_epochs=2, accumulate_grad_batches=accumulate, train_metrics=False)
    trainer.fit(task, DataLoader(data, batch_size=batch_size, shuffle=True))
    return copy.deepcopy(model.state_dict())


def test_gradient_accumulation_equals_full_batch_with_uneven_micro_batches() -> None:
    """60 samples, micro-batches of 8, 4 per step: windows of 8+8+8+8 and 8+8+8+4 samples.

    Normalising by micro-batch count would weight the 4-sample batch like the others; normalising by samples
    must reproduce plain full-batch steps of 32 and 28 samples.
    """
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(60, 5, generator=g), torch.randn(60, generator=g))
    accumulated = _accumulation_run(8, 4, data)
    reference = _split_run(data)
    for key in reference:
        torch.testing.assert_close(accumulated[key], reference[key], atol=1e-6, rtol=0)


def _split_run(data: TensorDataset) -> dict[str, torch.Tensor]:
    """Reference without accumulation: one step per 32-then-28 samples, in the trainer's shuffled order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):
        order = torch.randperm(60, generator=torch.Generator().manual_seed(epoch)).tolist()
        for chunk in (order[:32], order[32:]):
            x, y = data[chunk]
            loss = nn.functional.mse_loss(model(x).reshape(-1), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return copy.deepcopy(model.state_dict())


def test_early_stopping_stops_and_reports(blob_loaders) -> None:
    train, val = blob_loaders
    task = ClassificationTask(
        create_model("linear", input_shape=(4,), num_outputs=3), num_classes=3, optimizer={"name": "sgd", "lr": 0.0}
    )  # nothing improves
    stopper = EarlyStopping("val/loss", patience=2)
    trainer = quiet(max_epochs=20, callbacks=[stopper])
    trainer.fit(task, train, val)
    assert trainer.state.epoch == 3 and stopper.stopped_epoch == 3
    assert "did not improve for 2 epochs" in "\n".join(trainer.report_sections())


def test_nan_loss_stops_before_the_update_with_a_clear_message(blob_loaders) -> None:
    train, _ = blob_loaders
    model = create_model("linear", input_shape=(4,), num_outputs=3)
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    before = model[1].bias.detach().clone()
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 0, step 1.*learning rate"):
        quiet(max_epochs=1).fit(ClassificationTask(model, num_classes=3), train)
    assert torch.equal(model[1].bias, before)


def test_gradient_clipping_bounds_the_norm(blob_loaders) -> None:
    train, _ = blob_loaders
    norms: list[float] = []

    class Probe(Callback):
        order = 50  # after clipping

        def on_before_optimizer_step(self, trainer, optimizer, loss) -> None:
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    task = ClassificationTask(create_model("mlp", input_shape=(4,), num_outputs=3), num_classes=3)
    quiet(max_epochs=1, gradient_clip_val=0.01, callbacks=[Probe()]).fit(task, train)
    assert norms and max(norms) <= 0.01 + 1e-6


def test_cosine_schedule_is_stepped_per_optimizer_step(blob_loaders) -> None:
    train, _ = blob_loaders  # 90 samples / 16 = 6 steps per epoch
    task = ClassificationTask(
        create_model("linear", input_shape=(4,), num_outputs=3),
        num_classes=3,
        optimizer={"name": "sgd", "lr": 1.0},
        scheduler={"name": "cosine", "min_lr_ratio": 0.1},
    )
    trainer = quiet(max_epochs=2)
    trainer.fit(task, train)
    assert trainer.state.step == 12
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1, abs=1e-6)


def test_plugin_wraps_sees_every_step_and_is_checkpointed(blob_loaders, tmp_path: Path) -> None:
    train, val = blob_loaders

    class Counting(Plugin):
        def __init__(self) -> None:
            self.wrapped = False
            self.steps = 0

        def wrap(self, trainer, model, optimizer, loader):
            self.wrapped = True
            return model, optimizer, loader

        def on_train_step_end(self, trainer, loss) -> None:
            self.steps += 1

        def state_dict(self):
            return {"steps": self.steps}

        def report_section(self, trainer):
            return f"Counting plugin saw {self.steps} steps."

    plugin = Counting()
    task = ClassificationTask(create_model("linear", input_shape=(4,), num_outputs=3), num_classes=3)
    trainer = quiet(max_epochs=2, plugins=[plugin], run_dir=tmp_path)
    trainer.fit(task, train, val)
    assert plugin.wrapped and plugin.steps == trainer.state.step == 12
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["callbacks"]["Counting"] == {"steps": 12}
    assert "Counting plugin saw 12 steps." in trainer.report_sections()


def test_test_and_predict(blob_loaders) -> None:
    train, val = blob_loaders
    task = ClassificationTask(
        create_model("linear", input_shape=(4,), num_outputs=3), num_classes=3, optimizer={"name": "adamw", "lr": 0.1}
    )
    trainer = quiet(max_epochs=5)
    trainer.fit(task, train, val)
    evaluation = trainer.test(task, val)
    assert set(evaluation.curves) == {"roc", "pr", "confusion", "calibration"}
    assert int(evaluation.curves["confusion"].sum()) == 30
    probs = trainer.predict(task, val)
    assert probs.shape == (30, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(30))
    accuracy = (probs.argmax(1) == val.dataset.tensors[1]).float().mean()
    assert float(accuracy) == pytest.approx(evaluation.metrics["test/accuracy"], abs=1e-6)


def test_evaluation_and_prediction_use_infer_and_datasets_hear_the_epoch(blob_loaders) -> None:
    """``Task.infer`` (sliding windows, test-time tricks) serves validation, test and predict; training uses
    ``forward``. A training dataset with ``set_epoch`` is told each epoch (augmentation seeded per epoch)."""

    class Recording(ClassificationTask):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.calls: list[tuple[str, bool]] = []

        def forward(self, inputs):
            self.calls.append(("forward", self.model.training))
            return super().forward(inputs)

        def infer(self, inputs):
            self.calls.append(("infer", self.model.training))
            return super().forward(inputs) * 0 + torch.tensor([5.0, 0.0, 0.0])  # always class 0

    class EpochAware(TensorDataset):
        def __init__(self, *tensors) -> None:
            super().__init__(*tensors)
            self.epochs: list[int] = []

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    train, val = blob_loaders
    data = EpochAware(*train.dataset.tensors)
    task = Recording(create_model("linear", input_shape=(4,), num_outputs=3), num_classes=3)
    trainer = quiet(max_epochs=3)
    trainer.fit(task, DataLoader(data, batch_size=16, shuffle=True), val)
    assert data.epochs == [0, 1, 2]
    assert set(task.calls) == {("forward", True), ("infer", False)}
    assert trainer.predict(task, val).argmax(1).eq(0).all()
    share = float((val.dataset.tensors[1] == 0).float().mean())
    assert trainer.test(task, val).metrics["test/accuracy"] == pytest.approx(share)


def test_binary_and_regression_tasks_train(blobs) -> None:
    x, y = blobs.tensors
    binary = TensorDataset(x, (y == 0).long())
    task = ClassificationTask(
        create_model("linear", input_shape=(4,), num_outputs=1),
        num_classes=2,
        mode="binary",
        optimizer={"name": "adamw", "lr": 0.1},
    )
    trainer = quiet(max_epochs=10)
    trainer.fit(task, DataLoader(binary, batch_size=32, shuffle=True))
    assert trainer.validate(task, DataLoader(binary, batch_size=64))["val/roc_auc"] > 0.95

    target = x @ torch.tensor([1.0, -2.0, 0.5, 0.0])
    reg = TensorDataset(x, target)
    task = RegressionTask(
        create_model("linear", input_shape=(4,), num_outputs=1), optimizer={"name": "adamw", "lr": 0.1}
    )
    quiet(max_epochs=30).fit(task, DataLoader(reg, batch_size=32, shuffle=True))
    assert quiet().validate(task, DataLoader(reg, batch_size=64))["val/r2"] > 0.98


def test_weight_ema_averages_floats_follows_integer_buffers_and_swaps_back() -> None:
    module = nn.BatchNorm1d(2)  # float weight/bias/running stats, integer num_batches_tracked
    ema = WeightEMA(module, decay=0.75, warmup=False)
    with torch.no_grad():
        module.weight.fill_(5.0)
        module.num_batches_tracked.fill_(7)
    ema.update(module)
    assert torch.allclose(ema.weights["weight"], torch.full((2,), 0.75 * 1.0 + 0.25 * 5.0))
    assert int(ema.weights["num_batches_tracked"]) == 7
    with ema.applied(module):
        assert torch.allclose(module.weight, torch.full((2,), 2.0))
    assert torch.equal(module.weight.detach(), torch.full((2,), 5.0))
    warm = WeightEMA(module, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): the first weights fade quickly
    warm.updates = 100_000
    assert warm.current_decay() == 0.999


def test_ema_is_what_validation_checkpoints_and_fit_return(blob_loaders, tmp_path: Path) -> None:
    train, val = blob_loaders
    task = ClassificationTask(
        create_model("linear", input_shape=(4,), num_outputs=3), num_classes=3, optimizer={"name": "adamw", "lr": 0.1}
    )
    trainer = quiet(max_epochs=3, ema_decay=0.9, run_dir=tmp_path)
    last = trainer.fit(task, train, val)
    averaged = trainer.ema.weights
    for key, value in task.model.state_dict().items():
        assert torch.equal(value, averaged[key]), f"{key}: fit must return the averaged weights"
    assert trainer.validate(task, val)["val/loss"] == pytest.approx(last["val/loss"], abs=1e-6)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["averaged_model"]["updates"] == trainer.state.step == 18
    assert any(not torch.equal(saved["model"][k], averaged[k]) for k in averaged), "the live weights are kept too"
    fresh = ClassificationTask(create_model("linear", input_shape=(4,), num_outputs=3), num_classes=3)
    trainer.load_weights(fresh, tmp_path / "checkpoints" / "last.ckpt")
    for key, value in fresh.model.state_dict().items():
        assert torch.equal(value, averaged[key])
    assert any("EMA with decay 0.9 over 18" in section for section in trainer.report_sections())
    with pytest.raises(ConfigError, match="ema_decay"):
        quiet(ema_decay=1.0)


def test_micro_batches_give_the_full_batch_update_and_metrics_hooks_reach_the_log() -> None:
    from tujie_core import Callback
    from tujie_core.trainer import split_batch

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 4, generator=generator), torch.randint(0, 2, (20,), generator=generator)

    class Logs(Callback):
        def epoch_metrics(self, trainer) -> dict[str, float]:
            return {"extra/steps": float(trainer.state.step)}

    weights = []
    for micro in (None, 3):
        torch.manual_seed(1)
        model = nn.Linear(4, 2)
        task = ClassificationTask(model, num_classes=2, optimizer={"name": "sgd", "lr": 0.5})
        trainer = Trainer(accelerator="cpu", max_epochs=2, progress="none", micro_batch_size=micro, callbacks=[Logs()])
        trainer.fit(task, DataLoader(TensorDataset(x, y), batch_size=10))
        assert trainer.state.step == 4 and trainer.state.history[-1]["extra/steps"] == 4.0
        weights.append(model.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])
    assert [len(part["x"]) for part in split_batch({"x": x[:7], "y": y[:7]}, 3)] == [3, 3, 1]
    assert [len(a) for a, _ in split_batch((["a"] * 5, y[:5]), 2)] == [2, 2, 1]
    with pytest.raises(ConfigError, match="cannot split a batch of type object"):
        split_batch(object(), 2)
