"""Datasets, the model registry, save/load of trained models, atomic checkpoint files and reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tujie_core import (
    DATASETS,
    MODELS,
    ConfigError,
    DataError,
    Registry,
    create_model,
    load_pretrained,
    save_pretrained,
    write_report,
)
from tujie_core.checkpoint import atomic_write_bytes
from tujie_core.data import breast_cancer, diabetes, digits, table
from tujie_core.trainer import Evaluation


def test_bundled_datasets_have_stratified_splits_and_info() -> None:
    splits = digits()
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == 1797 and sizes[1] == pytest.approx(0.15 * 1797, abs=2)
    assert splits.info.kind == "multiclass" and splits.info.num_outputs == 10
    assert digits(as_image=True).train[0][0].shape == (1, 8, 8)
    assert breast_cancer().info.kind == "binary" and diabetes().info.kind == "regression"
    train_x = breast_cancer().train.tensors[0]
    assert train_x.mean(0).abs().max() < 1e-4  # standardised with training statistics


def test_table_reads_csv_and_tsv_with_string_labels(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i % 7 * 0.5},{'yes' if i % 2 else 'no'}" for i in range(40))
    (tmp_path / "d.csv").write_text("a,b,label\n" + rows + "\n")
    splits = table(tmp_path / "d.csv", target="label", val_fraction=0.2, test_fraction=0.2)
    assert splits.info.kind == "binary" and splits.info.class_names == ["no", "yes"]
    assert splits.info.feature_names == ["a", "b"] and len(splits.train) == 24
    (tmp_path / "r.tsv").write_text("x\ty\n" + "\n".join(f"{i}\t{i * 0.37:.3f}" for i in range(30)))
    assert table(tmp_path / "r.tsv", target="y").info.kind == "regression"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b,label\n1,2,0\n3,x,1\n", r"row 3, column 'b': 'x' is not a number"),
        ("a,b,label\n1,2,0\n3,4\n", r"row 3: expected 3 fields"),
        ("a,b,label\n1,2,\n", r"row 2, column 'label': empty target"),
        ("a,b,target\n1,2,0\n", r"no column 'label' \(columns: a, b, target\)"),
        ("a,b,label\n1,nan,0\n", r"row 2, column 'b': value 'nan' is not finite"),
        ("a,b,label\n", r"no data rows"),
    ],
)
def test_table_errors_name_file_row_and_column(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        table(path, target="label")
    assert str(path) in str(info.value)


def test_table_rejects_binary_encoding(tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"a,label\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        table(path, target="label")


def test_registry_validates_and_suggests() -> None:
    registry: Registry = Registry("widgets")

    @registry.register()
    def knob(size: int, colour: str = "red") -> tuple[int, str]:
        return size, colour

    assert registry.create("knob", size="3") == (3, "red")
    with pytest.raises(ConfigError, match=r"'knb' is not in the widgets registry \(did you mean 'knob'\?\)"):
        registry.get("knb")
    with pytest.raises(ConfigError, match=r"widgets.colr: unknown key \(did you mean 'colour'\?\)"):
        registry.create("knob", size=1, colr="blue")
    with pytest.raises(ConfigError, match=r"widgets.size: required key is missing"):
        registry.create("knob")
    assert {"mlp", "cnn", "linear"} <= set(MODELS.names()) and "digits" in DATASETS


def test_a_broken_entry_point_is_reported_and_the_rest_still_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from tujie_core import registry as registry_module

    points = [
        EntryPoint("broken", "tujie_no_such_package.models:thing", "tujie.widgets"),
        EntryPoint("sqrt", "math:sqrt", "tujie.widgets"),
    ]
    monkeypatch.setattr(registry_module.metadata, "entry_points", lambda group: points)
    registry: Registry = Registry("widgets")
    with pytest.warns(UserWarning, match="skipping widgets 'broken'.*ModuleNotFoundError"):
        assert registry.names() == ["sqrt"]
    with pytest.raises(ConfigError, match=r"widgets 'broken' could not be loaded \(tujie_no_such_package"):
        registry.get("broken")


def test_looking_up_one_name_loads_only_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings
    from importlib.metadata import EntryPoint

    from tujie_core import registry as registry_module

    points = [
        EntryPoint("broken", "tujie_no_such_package.models:thing", "tujie.widgets"),  # as a slow import would be
        EntryPoint("sqrt", "math:sqrt", "tujie.widgets"),
        EntryPoint("fn", "functools:partial", "tujie.widgets"),
    ]
    monkeypatch.setattr(registry_module.metadata, "entry_points", lambda group: points)
    registry: Registry = Registry("widgets")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken entry point is never touched
        assert registry.get("sqrt")(9.0) == 3.0
    assert registry.broken == {} and set(registry._entries) == {"sqrt"}
    with (
        pytest.warns(UserWarning, match="skipping widgets 'broken'"),
        pytest.raises(ConfigError, match="'nope' is not in the widgets registry"),
    ):
        registry.get("nope")  # an unknown name loads them all, for the list of choices
    assert registry.names() == ["fn", "sqrt"]


def test_a_name_clash_names_both_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from tujie_core import registry as registry_module

    registry: Registry = Registry("widgets")

    @registry.register("sqrt")
    def own_sqrt(x: float) -> float:
        return x**0.5

    monkeypatch.setattr(
        registry_module.metadata, "entry_points", lambda group: [EntryPoint("sqrt", "math:sqrt", "tujie.widgets")]
    )
    with pytest.raises(ConfigError, match=r"'sqrt' is registered twice: by .*own_sqrt and by math\.sqrt"):
        registry.names()
    with pytest.raises(ConfigError, match="registered twice"):

        @registry.register("sqrt")
        def other(x: float) -> float:
            return x


def test_save_and_load_pretrained_round_trip(tmp_path: Path) -> None:
    model = create_model("cnn", input_shape=(1, 8, 8), num_outputs=10, channels=[4, 8]).eval()
    spec = {"name": "cnn", "input_shape": [1, 8, 8], "num_outputs": 10, "channels": [4, 8]}
    save_pretrained(tmp_path / "m", model, spec, class_names=[str(i) for i in range(10)])
    loaded, config = load_pretrained(tmp_path / "m")
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert config["class_names"][3] == "3"
    with pytest.raises(DataError, match=r"missing config\.json"):
        load_pretrained(tmp_path)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_write_bytes(path, b"old")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_report_for_binary_and_regression(tmp_path: Path) -> None:
    from tujie_core.metrics import curve_metrics

    curves = curve_metrics("binary", 2)
    target = torch.randint(0, 2, (100,))
    probs = torch.rand(100)
    for metric in curves.values():
        metric.update(probs, target)
    computed = {k: (m.bins() if hasattr(m, "bins") else m.compute()) for k, m in curves.items()}
    history = [{"epoch": 1, "train/loss": 0.7, "val/loss": 0.6}, {"epoch": 2, "train/loss": 0.5, "val/loss": 0.55}]
    report = write_report(
        tmp_path / "bin",
        title="binary",
        history=history,
        class_names=["neg", "pos"],
        evaluations={"test": Evaluation({"test/accuracy": 0.5}, computed, "binary")},
    )
    text = report.read_text()
    assert "| accuracy | 0.5000 |" in text
    for png in ("roc.png", "pr.png", "confusion_matrix.png", "reliability.png", "learning_curves.png"):
        assert (tmp_path / "bin" / "plots" / png).stat().st_size > 1000 and f"plots/{png}" in text
    report = write_report(
        tmp_path / "reg",
        title="regression",
        history=history,
        evaluations={"test": Evaluation({"test/rmse": 0.3, "test/r2": 0.9}, {}, "regression")},
    )
    assert "| r2 | 0.9000 |" in report.read_text()


def test_a_registry_namespace_serves_every_prefixed_name() -> None:
    from tujie_core import Registry

    registry: Registry = Registry("widgets", entry_point_group="tujie.test-widgets-none")

    @registry.register_namespace("lib")
    def from_library(name: str, size: int = 1) -> tuple[str, int]:
        return name, size

    assert registry.create("lib/gear", size=3) == ("gear", 3)
    with pytest.raises(ConfigError, match="size"):
        registry.create("lib/gear", size="big")  # the factory's own options are still checked
    with pytest.raises(ConfigError, match=r"lib/<name>"):
        registry.get("other/gear")
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register_namespace("lib")(lambda name: name)


def test_a_dataset_can_give_the_model_its_standardisation(tmp_path: Path) -> None:
    """``DataInfo.model_args`` reach a builder that accepts them and are saved in the spec: the saved model takes
    raw features and needs no separate scaler."""
    from torch.utils.data import TensorDataset

    from tujie_core import DataInfo, DataSplits, train_from_config
    from tujie_core.models import Standardize
    from tujie_core.run import load_run
    from tujie_core.runs import parse_config

    rng = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, generator=rng) * torch.tensor([100.0, 1.0, 0.01]) + torch.tensor([500.0, 0.0, 2.0])
    y = (x[:, 0] > 500).float()
    mean, std = x[:80].mean(0).tolist(), x[:80].std(0).tolist()

    @DATASETS.register("raw_scale_toy")
    def raw_scale_toy() -> DataSplits:
        info = DataInfo(
            "binary",
            (3,),
            1,
            ["low", "high"],
            ["a", "b", "c"],
            model_args={"input_mean": mean, "input_std": std, "unused": 1},
            metadata={"schema": {"columns": ["a", "b", "c"]}},
        )
        return DataSplits(TensorDataset(x[:80], y[:80]), TensorDataset(x[80:], y[80:]), None, info)

    try:
        config = parse_config(
            {
                "name": "scaled",
                "output_dir": str(tmp_path),
                "data": {"name": "raw_scale_toy", "batch_size": 16},
                "model": {"name": "mlp", "hidden": [8]},
                "trainer": {"max_epochs": 2, "progress": "none"},
            }
        )
        result = train_from_config(config)
        model, saved = load_pretrained(result.run_dir / "model")
        assert saved["model"]["input_mean"] == pytest.approx(mean) and saved["schema"] == {"columns": ["a", "b", "c"]}
        assert "unused" not in saved["model"]
        assert isinstance(model[1], Standardize)
        run = load_run(result.run_dir)
        torch.testing.assert_close(model(x[80:]), run.task.model(x[80:]))
    finally:
        DATASETS._entries.pop("raw_scale_toy", None)
