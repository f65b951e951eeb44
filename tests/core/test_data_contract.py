"""Any shape of batch through one Trainer: dictionaries, graphs, unlabelled and iterable data, custom samplers,
losses averaged over items, soft targets, repeated fit, plugins that replace what they wrap, mixed precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.plugins.precision import MixedPrecision
from torch import Tensor, nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from tujie_core import Callback, ClassificationTask, ConfigError, Plugin, RegressionTask, Task, Trainer
from tujie_core.errors import DataError
from tujie_core.tasks import StepOutput


def quiet_trainer(**options) -> Trainer:
    return Trainer(accelerator="cpu", progress="none", **options)


class DictDataset(Dataset):
    """MONAI-style samples: ``{"image": ..., "label": ...}``."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        x, y = self.data[i]
        return {"image": x, "label": y}


def test_dictionary_batches_with_configured_keys_train_and_evaluate(blobs: TensorDataset) -> None:
    torch.manual_seed(0)
    task = ClassificationTask(
        nn.Linear(4, 3), num_classes=3, input_key="image", target_key="label", optimizer={"name": "adamw", "lr": 0.05}
    )
    loader = DataLoader(DictDataset(blobs), batch_size=16, shuffle=True)
    trainer = quiet_trainer(max_epochs=15)
    trainer.fit(task, loader)
    metrics = trainer.validate(task, DataLoader(DictDataset(blobs), batch_size=64))
    assert metrics["val/accuracy"] > 0.95


def test_a_dictionary_batch_without_the_input_key_names_the_keys(blobs: TensorDataset) -> None:
    task = ClassificationTask(nn.Linear(4, 3), num_classes=3)  # default keys: inputs, target
    with pytest.raises(DataError, match=r"no 'inputs' entry.*image, label"):
        quiet_trainer(max_epochs=1).fit(task, DataLoader(DictDataset(blobs), batch_size=16))


def test_keyword_batches_go_to_the_model_as_keyword_arguments() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 1), nn.Linear(3, 1)

        def forward(self, left: Tensor, right: Tensor) -> Tensor:
            return self.a(left) + self.b(right)

    batch = {"left": torch.randn(5, 2), "right": torch.randn(5, 3), "target": torch.randn(5)}
    task = RegressionTask(TwoInputs(), input_key=None)
    out = task.step(batch)
    assert out.num_items == 5 and out.preds.shape == (5,)


def test_graph_batches_train_a_gnn_through_the_same_trainer() -> None:
    pyg = pytest.importorskip("torch_geometric")
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader as GraphLoader
    from torch_geometric.nn import GCNConv, global_mean_pool

    g = torch.Generator().manual_seed(0)
    graphs = []
    for i in range(48):  # the target is the mean node feature: a GNN with mean pooling can fit it
        n = 3 + i % 4
        x = torch.randn(n, 2, generator=g)
        edges = torch.tensor([list(range(n - 1)), list(range(1, n))])
        graphs.append(Data(x=x, edge_index=torch.cat([edges, edges.flip(0)], 1), y=x[:, :1].mean().reshape(1)))

    class GNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = GCNConv(2, 16), nn.Linear(16, 1)

        def forward(self, batch: pyg.data.Batch) -> Tensor:
            h = self.conv(batch.x, batch.edge_index).relu()
            return self.head(global_mean_pool(h, batch.batch)).squeeze(-1)

    torch.manual_seed(0)
    task = RegressionTask(GNN(), optimizer={"name": "adam", "lr": 1e-2})
    trainer = quiet_trainer(max_epochs=30)
    batch = next(iter(GraphLoader(graphs, batch_size=8)))
    assert task.num_items(batch) == 8  # graphs, not nodes
    before = trainer.validate(task, GraphLoader(graphs, batch_size=16))["val/mse"]
    trainer.fit(task, GraphLoader(graphs, batch_size=8, shuffle=True))
    after = trainer.validate(task, GraphLoader(graphs, batch_size=16))["val/mse"]
    assert after < before / 4


def test_unlabelled_loader_predicts(blobs: TensorDataset) -> None:
    x, _ = blobs.tensors
    task = ClassificationTask(nn.Linear(4, 3), num_classes=3)
    probs = quiet_trainer().predict(task, DataLoader(TensorDataset(x), batch_size=32))
    assert probs.shape == (120, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(120))


def test_training_on_an_unlabelled_batch_says_so(blobs: TensorDataset) -> None:
    task = ClassificationTask(nn.Linear(4, 3), num_classes=3)
    with pytest.raises(DataError, match="no target"):
        quiet_trainer(max_epochs=1).fit(task, DataLoader(TensorDataset(blobs.tensors[0]), batch_size=16))


class Stream(IterableDataset):
    """An unsized stream of blob samples."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __iter__(self):
        return iter(self.data)


def test_an_iterable_dataset_trains_for_max_steps(blobs: TensorDataset) -> None:
    task = ClassificationTask(nn.Linear(4, 3), num_classes=3)
    trainer = quiet_trainer(max_epochs=100, max_steps=20)
    trainer.fit(task, DataLoader(Stream(blobs), batch_size=16))
    assert trainer.state.step == 20
    assert trainer.state.epoch == 3  # 8 batches a pass: two whole passes and a partial third


def test_an_iterable_dataset_without_max_steps_is_refused(blobs: TensorDataset) -> None:
    task = ClassificationTask(nn.Linear(4, 3), num_classes=3)
    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        quiet_trainer(max_epochs=2).fit(task, DataLoader(Stream(blobs), batch_size=16))


class Recording(ClassificationTask):
    """Remembers the first feature of every training sample it sees (the sample's id in these tests)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[int] = []

    def step(self, batch, with_predictions: bool = True) -> StepOutput:
        if self.model.training:
            self.seen += batch[0][:, 0].long().tolist()
        return super().step(batch, with_predictions)


def ids_dataset(n: int = 10) -> TensorDataset:
    x = torch.zeros(n, 4)
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    return TensorDataset(x, torch.arange(n) % 3)


def test_weighted_random_sampler_is_kept() -> None:
    data = ids_dataset()
    sampler = WeightedRandomSampler([0.0] * 9 + [1.0], num_samples=10)
    task = Recording(nn.Linear(4, 3), num_classes=3)
    quiet_trainer(max_epochs=2).fit(task, DataLoader(data, batch_size=5, sampler=sampler))
    assert task.seen == [9] * 20


def test_subset_random_sampler_is_kept_and_reproducible() -> None:
    data = ids_dataset()

    def seen(seed: int) -> list[int]:
        task = Recording(nn.Linear(4, 3), num_classes=3)
        sampler = SubsetRandomSampler([1, 3, 5, 7])
        quiet_trainer(max_epochs=3, seed=seed).fit(task, DataLoader(data, batch_size=2, sampler=sampler))
        return task.seen

    first = seen(0)
    assert sorted(first) == sorted([1, 3, 5, 7] * 3)
    assert seen(0) == first  # order from (seed, epoch), not from the global RNG
    assert seen(1) != first


class TokenTask(Task):
    """A loss averaged over valid tokens (target -100 is padding), like masked-LM or token classification."""

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(outputs.flatten(0, 1), target.flatten(), ignore_index=-100)

    def num_items(self, batch) -> int:
        return int((batch[1] != -100).sum())


def test_token_averaged_loss_accumulates_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, 4, generator=g)
    y = torch.randint(0, 3, (8, 6), generator=g)
    y[:4, 1:] = -100  # first half: one token per sequence; second half: six
    data = TensorDataset(x, y)

    def weights_after(batch_size: int, accumulate: int) -> Tensor:
        torch.manual_seed(0)
        task = TokenTask(nn.Linear(4, 3), optimizer={"name": "sgd", "lr": 0.5})
        trainer = quiet_trainer(max_epochs=1, accumulate_grad_batches=accumulate, train_metrics=False)
        trainer.fit(task, DataLoader(data, batch_size=batch_size))
        return task.model.weight.detach().clone()

    torch.testing.assert_close(weights_after(4, 2), weights_after(8, 1), atol=1e-6, rtol=0)


def test_soft_targets_train_with_soft_cross_entropy(blobs: TensorDataset) -> None:
    x, y = blobs.tensors
    soft = F.one_hot(y, 3).float() * 0.8 + 0.2 / 3  # what mixup or label smoothing produces
    task = ClassificationTask(nn.Linear(4, 3), num_classes=3, optimizer={"name": "adamw", "lr": 0.05})
    out = task.step((x, soft))
    torch.testing.assert_close(out.loss, F.cross_entropy(task.model(x), soft))
    torch.testing.assert_close(out.target, y)  # metrics see the dominant class
    trainer = quiet_trainer(max_epochs=10)
    trainer.fit(task, DataLoader(TensorDataset(x, soft), batch_size=16, shuffle=True))
    assert trainer.validate(task, DataLoader(blobs, batch_size=64))["val/accuracy"] > 0.95


def test_fit_twice_trains_again_from_the_current_weights(blob_loaders) -> None:
    train, val = blob_loaders
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    trainer = quiet_trainer(max_epochs=2)
    model[0].requires_grad_(False)  # first fit: the head only
    trainer.fit(ClassificationTask(model, num_classes=3), train, val)
    body = model[0].weight.detach().clone()
    head = model[2].weight.detach().clone()
    model[0].requires_grad_(True)  # second fit: everything
    trainer.fit(ClassificationTask(model, num_classes=3, optimizer={"name": "adamw", "lr": 1e-4}), train, val)
    assert trainer.state.step == 2 * len(train)  # a new run of two epochs, not a no-op
    assert len(trainer.state.history) == 2
    assert not torch.equal(model[0].weight, body) and not torch.equal(model[2].weight, head)


class Halve(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) / 2


class Replacing(Plugin):
    """Wraps the model, swaps the optimizer for SGD, keeps only the first batch of every epoch, counts
    backward calls, and keeps that count in checkpoints."""

    def __init__(self) -> None:
        self.backwards = 0
        self.restored: dict | None = None

    def wrap(self, trainer, model, optimizer, train_loader):
        return Halve(model), torch.optim.SGD(model.parameters(), lr=0.1), train_loader

    def setup(self, trainer) -> None:
        self.optimizer = trainer.optimizer
        trainer.train_loader = [next(iter(trainer.train_loader))]

    def backward(self, trainer, loss, *, backward, sample_losses=None, weight=1.0) -> None:
        self.backwards += 1
        backward(loss, sample_losses=sample_losses)

    def state_dict(self) -> dict:
        return {"backwards": self.backwards}

    def load_state_dict(self, state: dict) -> None:
        self.restored = state
        self.backwards = state["backwards"]


def test_a_plugin_replaces_model_optimizer_and_loader_and_keeps_state(blob_loaders, tmp_path: Path) -> None:
    train, val = blob_loaders
    plugin = Replacing()
    trainer = quiet_trainer(max_epochs=3, plugins=[plugin], run_dir=tmp_path)
    task = ClassificationTask(nn.Linear(4, 3), num_classes=3)
    trainer.fit(task, train, val)
    assert plugin.backwards == 3 and trainer.state.step == 3  # one batch an epoch
    assert isinstance(trainer.model.module, Halve)
    assert "SGD" in type(trainer.optimizer.optimizer).__name__
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["callbacks"]["Replacing"] == {"backwards": 3}

    again = Replacing()
    resumed = quiet_trainer(max_epochs=4, plugins=[again], run_dir=tmp_path / "resumed")
    last = tmp_path / "checkpoints" / "last.ckpt"
    resumed.fit(ClassificationTask(nn.Linear(4, 3), num_classes=3), train, val, ckpt_path=last)
    assert again.restored == {"backwards": 3} and again.backwards == 4


def fp16_scaler_trainer(**options) -> Trainer:
    precision = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**8))
    return Trainer(accelerator="cpu", progress="none", fabric_plugins=[precision], **options)


class Overflowing(ClassificationTask):
    """The loss is huge at the first step only, so the scaled gradients overflow and the scaler skips the step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def loss(self, outputs, target):
        self.calls += 1
        return super().loss(outputs, target) * (1e35 if self.calls == 1 else 1.0)


class SkipCounter(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_step_end(self, trainer, loss) -> None:
        if trainer.step_skipped:
            self.steps.append(trainer.state.step)


def test_steps_the_gradient_scaler_skips_move_neither_schedule_nor_ema(blob_loaders) -> None:
    train, _ = blob_loaders
    task = Overflowing(nn.Linear(4, 3), num_classes=3, scheduler={"name": "linear", "warmup_steps": 0})
    skipped = SkipCounter()
    trainer = fp16_scaler_trainer(max_epochs=1, ema_decay=0.9, train_metrics=False, callbacks=[skipped])
    trainer.fit(task, train)
    assert trainer.state.step == len(train) and skipped.steps == [1]  # the overflowing step only
    assert trainer.ema.updates == len(train) - 1  # the skipped step did not count
    schedule = next(c for c in trainer._active if type(c).__name__ == "LRScheduling").schedule.scheduler
    assert schedule.last_epoch == len(train) - 1


def test_gradient_scaler_state_is_checkpointed_and_restored(blob_loaders, tmp_path: Path) -> None:
    train, _ = blob_loaders
    trainer = fp16_scaler_trainer(max_epochs=1, run_dir=tmp_path)
    trainer.fit(Overflowing(nn.Linear(4, 3), num_classes=3), train)
    scale = trainer.fabric.strategy.precision.scaler.get_scale()
    assert scale < 2.0**8  # the overflow lowered it
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["precision"]["scale"] == scale
    resumed = fp16_scaler_trainer(max_epochs=1, run_dir=tmp_path / "again")
    last = tmp_path / "checkpoints" / "last.ckpt"
    resumed.fit(ClassificationTask(nn.Linear(4, 3), num_classes=3), train, ckpt_path=last)
    assert resumed.fabric.strategy.precision.scaler.get_scale() == scale


def test_missing_regression_targets_are_left_out_of_loss_and_metrics() -> None:
    task = RegressionTask(nn.Identity())
    outputs = torch.tensor([[1.0, 5.0], [2.0, 0.0]])
    target = torch.tensor([[1.0, float("nan")], [4.0, float("nan")]])
    assert task.loss(outputs, target).item() == pytest.approx(2.0)  # (0² + 2²) / 2 measured entries
    assert task.sample_losses(outputs, target).tolist() == pytest.approx([0.0, 4.0])
    out = task.step((outputs, target))
    assert out.preds.tolist() == [1.0, 2.0] and out.target.tolist() == [1.0, 4.0]
    metrics = task.metrics()
    metrics.update(out.preds, out.target)
    assert metrics.compute()["mse"].item() == pytest.approx(2.0)


def test_missing_multilabel_labels_are_masked_and_ignored_by_metrics() -> None:
    task = ClassificationTask(nn.Identity(), num_classes=2, mode="multilabel")
    logits = torch.tensor([[4.0, -4.0], [-4.0, 9.0]])
    target = torch.tensor([[1.0, float("nan")], [0.0, 0.0]])
    full = F.binary_cross_entropy_with_logits(logits, target.nan_to_num(), reduction="none")
    assert task.loss(logits, target).item() == pytest.approx(full[[0, 1, 1], [0, 0, 1]].mean().item())
    out = task.step((logits, target))
    assert out.target.tolist() == [[1, -1], [0, 0]]
    metrics = task.metrics()
    metrics.update(out.preds, out.target)
    assert metrics.compute()["accuracy"].item() == pytest.approx(2 / 3)  # the missing label is not counted wrong


def test_a_batcher_collates_every_split_and_a_training_collate_only_training() -> None:
    from tujie_core.config import RunConfig
    from tujie_core.data import DataInfo, DataSplits
    from tujie_core.run import loaders

    data = TensorDataset(torch.randn(8, 2), torch.zeros(8))

    def batcher(items: list) -> str:
        return "batcher"

    def augment(items: list) -> str:
        return "augment"

    info = DataInfo("regression", (2,), 1)
    config = RunConfig.model_validate({"data": {"name": "digits", "batch_size": 4}, "model": {"name": "mlp"}})
    made = loaders(config, DataSplits(data, data, None, info, batcher=batcher))
    assert next(iter(made["train"])) == "batcher" and next(iter(made["val"])) == "batcher"
    made = loaders(config, DataSplits(data, data, None, info, collate=augment, batcher=batcher))
    assert next(iter(made["train"])) == "augment" and next(iter(made["val"])) == "batcher"
