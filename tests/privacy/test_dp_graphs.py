"""The dp plugin on graph batches (molecules: a sample is a graph, a layer's rows are its atoms or bonds): loop
clipping chosen for them, its per-sample gradients exact, its clipping a bound on each molecule, empty Poisson
batches, and a private molecule run that finishes within its budget and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tujie_core import (
    Callback,
    ClassificationTask,
    ConfigError,
    RegressionTask,
    Trainer,
    create_model,
    load_config,
    train_from_config,
)
from tujie_privacy.dp import DPSGD, empty_batch_like, is_graph_batch

pytest.importorskip("torch_geometric")
pytest.importorskip("rdkit")

from tujie_health.cli import bundled_config
from tujie_health.molecules.data import molecules

pytestmark = pytest.mark.filterwarnings(
    "ignore:Optimal order is the largest alpha:UserWarning", "ignore:.*torch.jit.script.*:FutureWarning"
)
SMILES = [
    ("CCO", -5.0),
    ("c1ccccc1O", -6.6),
    ("CC(=O)O", -6.7),
    ("CCC", 2.0),
    ("CCCC", 2.1),
    ("CCN", -4.5),
    ("CO", -5.1),
    ("CC(C)O", -4.7),
    ("c1ccccc1", -0.9),
    ("Cc1ccccc1", -0.9),
    ("CCOC", -2.1),
    ("CC(=O)C", -3.8),
    ("ClCCl", -1.3),
    ("CCCl", -0.3),
    ("OCCO", -9.3),
    ("CC#N", -3.9),
    ("C1CCCCC1", 1.2),
    ("CCS", -1.1),
    ("NC(=O)C", -9.7),
    ("c1ccncc1", -4.7),
    ("C", 2.0),  # one atom, no bond: the bond embedding gets no gradient from it (zeros, not a missing one)
]


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("molecules") / "mols.csv"
    path.write_text("smiles,y\n" + "".join(f"{s},{y}\n" for s, y in SMILES))
    return path


@pytest.fixture(scope="module")
def splits(csv_path: Path):
    return molecules(path=csv_path, val_fraction=0.0, test_fraction=0.0)


def dmpnn() -> nn.Module:
    torch.manual_seed(0)
    return create_model("dmpnn", input_shape=(8,), num_outputs=1, hidden=16, ffn_hidden=16)


def loader(splits, batch_size: int | None = None) -> DataLoader:
    return DataLoader(splits.train, batch_size=batch_size or len(splits.train), collate_fn=splits.batcher)


def alone_gradients(model: nn.Module, splits) -> list[list[torch.Tensor]]:
    """Each molecule's gradient of its own loss, computed with the molecule alone in its batch."""
    task = RegressionTask(model)
    grads = []
    for item in splits.train:
        out = task.step(splits.batcher([item]))
        grads.append([g.detach() for g in torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)])
    return [
        [torch.zeros_like(p) if g is None else g for g, p in zip(row, model.parameters(), strict=True)] for row in grads
    ]


def fit(model: nn.Module, data: DataLoader, plugins: list, lr: float, steps: int = 1) -> Trainer:
    task = RegressionTask(model, optimizer={"name": "sgd", "lr": lr})
    trainer = Trainer(accelerator="cpu", max_steps=steps, max_epochs=steps, progress="none", plugins=plugins)
    trainer.fit(task, data)
    return trainer


class GradSampleRecorder(Callback):
    """What the dp optimizer is handed to clip: every parameter's ``grad_sample``, before clipping."""

    def __init__(self) -> None:
        self.seen: list[list[torch.Tensor]] = []

    def on_fit_start(self, trainer) -> None:
        optimizer = next(p for p in trainer.plugins if isinstance(p, DPSGD)).optimizer
        clip = optimizer.clip_and_accumulate

        def recording() -> None:
            self.seen.append([p.grad_sample.detach().clone() for p in optimizer.params])
            clip()

        optimizer.clip_and_accumulate = recording


def test_loop_gradients_are_each_molecule_alone_and_the_update_is_the_plain_one(splits) -> None:
    model = dmpnn()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    expected = alone_gradients(model, splits)
    recorder = GradSampleRecorder()
    dp = DPSGD(noise_multiplier=0.0, max_grad_norm=1e6, poisson_sampling=False)  # auto: loop for graphs
    task = RegressionTask(model, optimizer={"name": "sgd", "lr": 0.1})
    trainer = Trainer(accelerator="cpu", max_steps=1, progress="none", plugins=[dp], callbacks=[recorder])
    trainer.fit(task, loader(splits))
    assert dp.clipping == "loop" and dp.facts()["clipping"] == "loop" and not hasattr(dp.module, "_module")
    (grad_samples,) = recorder.seen
    n = len(splits.train)
    for p, per_sample in zip(model.parameters(), grad_samples, strict=True):
        assert per_sample.shape == (n, *p.shape)
    for i in range(n):
        for j, per_sample in enumerate(grad_samples):
            torch.testing.assert_close(per_sample[i], expected[i][j], rtol=1e-4, atol=1e-6)  # float32 sums
    assert any(float(g[i].abs().sum()) > 0 for g in grad_samples for i in range(n))

    plain = dmpnn()  # noise 0, a clip no gradient reaches: DP-SGD's step is the plain step
    plain.load_state_dict(initial)
    fit(plain, loader(splits), [], lr=0.1)
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_clipping_bounds_each_molecule(splits) -> None:
    c, lr, n = 0.01, 1.0, len(splits.train)
    model = dmpnn()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    grads = alone_gradients(model, splits)
    norms = [float(torch.sqrt(sum(g.pow(2).sum() for g in row))) for row in grads]
    assert min(norms) > 10 * c  # every molecule is clipped
    by_hand = [
        p.detach() - lr * sum(row[j] * min(1.0, c / (norm + 1e-6)) for row, norm in zip(grads, norms, strict=True)) / n
        for j, p in enumerate(model.parameters())
    ]
    fit(model, loader(splits), [DPSGD(noise_multiplier=0.0, max_grad_norm=c, poisson_sampling=False)], lr)
    for p, q in zip(model.parameters(), by_hand, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-4, atol=1e-7)

    # the sensitivity DP-SGD needs: the summed update moves by at most C when one molecule leaves the batch
    def summed_update(keep: list[int]) -> torch.Tensor:
        net = dmpnn()
        net.load_state_dict(initial)
        data = DataLoader([splits.train[i] for i in keep], batch_size=64, collate_fn=splits.batcher)  # divisor 64
        fit(net, data, [DPSGD(noise_multiplier=0.0, max_grad_norm=c, poisson_sampling=False)], lr)
        return torch.cat([(initial[k] - v).flatten() * 64 / lr for k, v in net.state_dict().items() if k in initial])

    everyone = summed_update(list(range(n)))
    worst = max(range(n), key=norms.__getitem__)
    without = summed_update([i for i in range(n) if i != worst])
    assert float((everyone - without).norm()) == pytest.approx(c, rel=1e-3)  # a large gradient counts as C


def test_graph_batches_choose_loop_and_refuse_per_row_clipping(splits) -> None:
    batch = splits.batcher([splits.train[0], splits.train[1]])
    assert is_graph_batch(batch) and is_graph_batch((batch, torch.zeros(2))) and not is_graph_batch(torch.zeros(2))
    for asked in ("hooks", "ghost"):
        with pytest.raises(ConfigError, match=f"clipping={asked} .* graphs .* clipping=loop"):
            fit(dmpnn(), loader(splits, 4), [DPSGD(epsilon=3, clipping=asked)], lr=0.1)
    tensors = TensorDataset(torch.randn(32, 5), torch.randint(0, 3, (32,)))
    dp = DPSGD(noise_multiplier=1.0)
    trainer = Trainer(accelerator="cpu", max_epochs=1, progress="none", plugins=[dp])
    trainer.fit(ClassificationTask(nn.Linear(5, 3), num_classes=3), DataLoader(tensors, batch_size=8))
    assert dp.clipping == "ghost"  # one row per sample: auto keeps Opacus' ghost clipping


def test_an_empty_poisson_draw_is_an_empty_graph_batch_and_its_step_counts(splits) -> None:
    batch = splits.batcher([splits.train[0], splits.train[1]])
    empty = empty_batch_like(batch)
    assert empty.num_graphs == 0 and empty.x.shape == (0, 8) and empty.edge_index.shape == (2, 0)
    assert empty.y.shape == (0, 1) and empty.smiles == [] and batch.num_graphs == 2  # the template is intact
    assert dmpnn()(empty).shape == (0, 1) and RegressionTask(dmpnn()).num_items(empty) == 0

    class Counting(RegressionTask):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.sizes: list[int] = []

        def num_items(self, batch) -> int:
            n = super().num_items(batch)
            self.sizes.append(n)
            return n

    dp = DPSGD(noise_multiplier=1.0, accountant="rdp")  # expected batch 1 of 21: about a third of the draws are empty
    task = Counting(dmpnn(), optimizer={"name": "sgd", "lr": 0.01})
    trainer = Trainer(accelerator="cpu", max_epochs=2, progress="none", plugins=[dp])
    trainer.fit(task, loader(splits, 1))
    assert 0 in task.sizes and trainer.state.step == 2 * len(splits.train)  # 1/q draws per epoch, empty or not
    assert dp.steps == trainer.state.step  # the empty draws are steps of the accountant, as in Opacus
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


class Crash(Callback):
    def on_train_step_end(self, trainer, loss) -> None:
        if trainer.state.step == 7:
            raise RuntimeError("power cut")


def test_a_private_molecule_run_keeps_its_budget_and_resumes_exactly(csv_path: Path, tmp_path: Path) -> None:
    overrides = [
        f"data.path={csv_path}",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
        "data.batch_size=4",  # 17 training molecules: q = 4/17, 4 steps per epoch
        "model.hidden=16",
        "model.ffn_hidden=16",
        "model.depth=2",
        "scheduler.warmup_steps=2",
        "trainer.max_epochs=2",
        "trainer.checkpoint_every_n_steps=2",
        "trainer.progress=none",
        f"output_dir={tmp_path}",
    ]
    config = load_config(bundled_config("freesolv_dmpnn"), overrides, plugins={"dp": "epsilon=3,accountant=rdp"})
    reference = train_from_config(config, run_dir=tmp_path / "ref")
    facts = json.loads((reference.run_dir / "dp.json").read_text())
    assert facts["clipping"] == "loop" and facts["steps"] == 8 and 0 < facts["epsilon"] <= 3.0
    report = reference.report.read_text()
    assert "loop clipping (one backward pass per graph" in report and "Budget: ε ≤ 3" in report

    with pytest.raises(RuntimeError, match="power cut"):  # mid epoch 2, after the checkpoint of step 6
        train_from_config(config, callbacks=[Crash()], run_dir=tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["trainer"]["step"] == 6 and state["callbacks"]["dp"]["history"][0][2] == 6
    train_from_config(config, resume=tmp_path / "run")
    expected = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "run" / "model" / "model.safetensors")
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{key} differs after resume"
    resumed = json.loads((tmp_path / "run" / "dp.json").read_text())
    assert resumed["history"] == facts["history"] and resumed["epsilon"] == facts["epsilon"]
