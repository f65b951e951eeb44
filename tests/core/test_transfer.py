"""Transfer learning in the supervised run: matching weights loaded, the head kept fresh, the backbone frozen then
trained at a lower learning rate; and a training-only collate (batch augmentation) on DataSplits."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tujie_core import DATASETS, Callback, ClassificationTask, ConfigError, RunConfig, train_from_config
from tujie_core.data import DataSplits
from tujie_core.run import loaders
from tujie_core.transfer import head_parameters, load_matching


def _cnn_config(tmp_path: Path, **extra) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "t",
            "output_dir": str(tmp_path),
            "data": {"name": "digits", "as_image": True, "batch_size": 64},
            "model": {"name": "cnn", "channels": [8, 16]},
            "trainer": {"max_epochs": 1, "progress": "none"},
            **extra,
        }
    )


def test_matching_tensors_load_and_a_resized_head_stays_fresh(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    target = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
    fresh_head = target[2].weight.detach().clone()
    report = load_matching(target, tmp_path / "w.safetensors")
    assert report.loaded == 2 and report.skipped == ["2.weight", "2.bias"]
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[2].weight, fresh_head)
    assert head_parameters(target) == {"2.weight", "2.bias"}


def test_torch_files_are_read_without_unpickling_objects(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ok.pt")
    assert load_matching(nn.Linear(3, 2), tmp_path / "ok.pt").loaded == 2
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(print))  # weights_only refuses arbitrary objects
    with pytest.raises(ConfigError, match=r"evil\.pt: cannot read weights"):
        load_matching(nn.Linear(3, 2), tmp_path / "evil.pt")
    save_file({"other.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="no parameter fits this model"):
        load_matching(nn.Linear(3, 2), tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="no weights there"):
        load_matching(nn.Linear(3, 2), tmp_path / "missing")


def test_lr_scales_put_parameters_in_their_own_group() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    task = ClassificationTask(model, num_classes=2, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.1})
    task.lr_scales = {"0.weight": 0.1, "0.bias": 0.1}
    optimizer, _ = task.configure_optimizers(10)
    by_lr = {(round(g["lr"], 6), g["weight_decay"]): len(g["params"]) for g in optimizer.param_groups}
    assert by_lr == {(0.001, 0.1): 1, (0.001, 0.0): 1, (0.01, 0.1): 1, (0.01, 0.0): 1}


def test_a_run_starts_from_another_runs_weights_with_the_backbone_frozen_then_trained(tmp_path: Path) -> None:
    first = train_from_config(_cnn_config(tmp_path / "a"))
    loaded = load_file(str(first.run_dir / "model" / "model.safetensors"))
    frozen = _cnn_config(tmp_path / "b", transfer={"init": str(first.run_dir), "freeze_epochs": 1})
    second = train_from_config(frozen)
    after = load_file(str(second.run_dir / "model" / "model.safetensors"))
    head = {"11.weight", "11.bias"}  # (conv, norm, relu, pool) × 2, pool, flatten, dropout, linear
    assert any(not torch.equal(after[k], loaded[k]) for k in head)
    buffers = ("running_mean", "running_var", "num_batches_tracked")  # batch norm statistics still adapt
    assert all(torch.equal(after[k], loaded[k]) for k in after if k not in head and not k.endswith(buffers))
    summary = json.loads((second.run_dir / "summary.json").read_text())
    assert summary["transfer"]["loaded"] == len(loaded)
    assert "backbone frozen for 1 epoch" in second.report.read_text()
    unfrozen = _cnn_config(
        tmp_path / "c",
        transfer={"init": str(first.run_dir), "freeze_epochs": 1, "backbone_lr_scale": 0.1},
        trainer={"max_epochs": 2, "progress": "none"},
    )
    seen: list[dict[str, float]] = []

    class LearningRates(Callback):  # what each parameter learns at, epoch by epoch, in the optimizer itself
        def on_train_epoch_end(self, trainer, metrics):
            groups = trainer.optimizer.param_groups
            rate = {id(p): g["lr"] for g in groups for p in g["params"]}
            model = trainer.model
            seen.append({n: rate[id(p)] if p.requires_grad else 0.0 for n, p in model.named_parameters()})

    third_run = train_from_config(unfrozen, callbacks=[LearningRates()])
    third = load_file(str(third_run.run_dir / "model" / "model.safetensors"))
    assert not torch.equal(third["0.weight"], loaded["0.weight"])  # the second epoch trains the backbone
    frozen_epoch, open_epoch = seen
    heads = [n for n in frozen_epoch if n.endswith(tuple(head))]
    assert all(frozen_epoch[n] == 0.0 for n in frozen_epoch if n not in heads)  # epoch 1: the head alone
    assert all(frozen_epoch[n] > 0 for n in heads)
    head_lr = open_epoch[heads[0]]
    backbone = [n for n in open_epoch if n not in heads]
    assert backbone and all(open_epoch[n] == pytest.approx(0.1 * head_lr) for n in backbone)  # then at 0.1× lr


def test_freezing_is_refused_with_plugins(tmp_path: Path) -> None:
    raw = _cnn_config(tmp_path, transfer={"init": str(tmp_path), "freeze_epochs": 1}).model_dump(mode="json")
    raw["plugins"] = [{"name": "grad_clip_demo"}]
    from tujie_core.runs import parse_config

    with pytest.raises(ConfigError, match=r"transfer\.freeze_epochs: cannot be combined with plugins"):
        parse_config(raw)


def test_the_training_collate_applies_to_training_batches_only() -> None:
    splits: DataSplits = DATASETS.create("digits", as_image=True)
    calls = []

    def collate(items):
        calls.append(len(items))
        return torch.utils.data.default_collate(items)

    splits.collate = collate
    split_loaders = loaders(_cnn_config(Path(".")), splits)
    next(iter(split_loaders["val"]))
    assert calls == []
    next(iter(split_loaders["train"]))
    assert calls == [64]
