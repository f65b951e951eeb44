"""The dp plugin: DP-SGD through the core Trainer and run layer, its accounting, budget and exact resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from opacus.accountants import PRVAccountant, RDPAccountant
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from tujie_core import ClassificationTask, ConfigError, Trainer, train_from_config
from tujie_core.cli import app
from tujie_core.run import load_run
from tujie_core.runs import parse_config
from tujie_privacy.dp import DPSGD, epsilon_after, fix_model

pytestmark = pytest.mark.filterwarnings(
    "ignore:Full backward hook is firing:UserWarning", "ignore:Optimal order is the largest alpha:UserWarning"
)
SCRIPT = Path(__file__).parent / "scripts" / "dp_run.py"
C, LR = 0.05, 0.5


def tensors(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator)


@pytest.mark.parametrize("clipping", ["ghost", "hooks"])
@pytest.mark.parametrize("micro", [None, 3], ids=["one-batch", "micro-batches"])
def test_one_step_is_the_per_sample_clipped_update(clipping: str, micro: int | None, clipped_update) -> None:
    """Noise off and sampling off: the step is exactly DP-SGD's, also when the logical batch is cut into
    physical micro-batches of 3 (16 = 3+3+3+3+3+1), clipped one by one and stepped once."""
    x, y = tensors()
    torch.manual_seed(1)
    reference = nn.Linear(5, 3)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    expected = clipped_update(reference, x, y, C, LR)
    model = nn.Linear(5, 3)
    model.load_state_dict(initial)
    task = ClassificationTask(model, num_classes=3, optimizer={"name": "sgd", "lr": LR})
    dp = DPSGD(noise_multiplier=0.0, max_grad_norm=C, poisson_sampling=False, clipping=clipping)
    trainer = Trainer(accelerator="cpu", max_epochs=1, progress="none", plugins=[dp], micro_batch_size=micro)
    trainer.fit(task, DataLoader(TensorDataset(x, y), batch_size=16))
    assert trainer.state.step == 1 and dp.steps == 1
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-6)


def test_epsilon_equals_opacus_accountant_and_is_logged_every_epoch(tmp_path: Path) -> None:
    x, y = tensors(256)
    task = ClassificationTask(nn.Linear(5, 3), num_classes=3, optimizer={"name": "sgd", "lr": 0.1})
    dp = DPSGD(epsilon=4.0, accountant="prv")
    trainer = Trainer(accelerator="cpu", max_epochs=3, progress="none", plugins=[dp], run_dir=tmp_path)
    trainer.fit(task, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    assert dp.steps == trainer.state.step == 3 * 8  # Poisson: 1/q = 8 logical batches per epoch
    opacus = PRVAccountant()
    rdp = RDPAccountant()
    for _ in range(dp.steps):
        opacus.step(noise_multiplier=dp.noise_multiplier, sample_rate=32 / 256)
        rdp.step(noise_multiplier=dp.noise_multiplier, sample_rate=32 / 256)
    assert dp.epsilon == pytest.approx(opacus.get_epsilon(delta=dp.delta), rel=1e-9)
    assert dp.epsilon <= 4.0 and dp.epsilon > 3.5  # the noise was found for the planned steps
    assert epsilon_after("rdp", dp.history, dp.delta) == pytest.approx(rdp.get_epsilon(delta=dp.delta))
    assert dp.delta == 1e-5
    logged = [json.loads(line)["dp/epsilon"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 3 and logged[0] < logged[1] < logged[2] == pytest.approx(dp.epsilon)
    facts = json.loads((tmp_path / "dp.json").read_text())
    assert facts["steps"] == 24 and facts["sample_rate"] == 0.125 and facts["poisson_sampling"]


def test_the_budget_stops_the_run_before_it_is_passed() -> None:
    x, y = tensors(256)
    task = ClassificationTask(nn.Linear(5, 3), num_classes=3, optimizer={"name": "sgd", "lr": 0.1})
    dp = DPSGD(epsilon=1.0, noise_multiplier=3.0, accountant="rdp")  # about 25 steps fit
    trainer = Trainer(accelerator="cpu", max_epochs=50, progress="none", plugins=[dp])
    trainer.fit(task, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    assert 0 < dp.steps < 50 * 8 and trainer.state.step == dp.steps
    assert dp.epsilon <= 1.0
    one_more = [*dp.history[:-1], (dp.history[-1][0], dp.history[-1][1], dp.history[-1][2] + 1)]
    assert epsilon_after("rdp", one_more, dp.delta) > 1.0
    assert "Stopped by the privacy budget" in trainer.report_sections()[-1]


def test_batchnorm_is_replaced_and_named_and_the_run_rebuilds(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.BatchNorm1d(2))
    fixed, changes = fix_model(model)
    assert fixed is model and changes == ["1: BatchNorm2d(4) → GroupNorm(4, 4)", "4: BatchNorm1d(2) → GroupNorm(1, 2)"]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    config = parse_config(
        {
            "name": "dp-cnn",
            "output_dir": str(tmp_path),
            "data": {"name": "digits", "batch_size": 64, "as_image": True},
            "model": {"name": "cnn", "channels": [8]},
            "trainer": {"max_epochs": 1, "progress": "none"},
            "plugins": [{"name": "dp", "epsilon": 8}],
        }
    )
    result = train_from_config(config)
    report = result.report.read_text()
    assert "BatchNorm2d(8) → GroupNorm(8, 8)" in report and "ε = " in report
    loaded = load_run(result.run_dir)  # rebuilt from config.yaml: the same GroupNorm, the saved weights load
    assert any(isinstance(m, nn.GroupNorm) for m in loaded.task.model.modules())


def test_a_layer_that_cannot_be_private_is_named() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(5))
            self.register_buffer("count", torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.count += 1
            return x * self.weight

    model = nn.Sequential(Scaled(), nn.Linear(5, 3))
    task = ClassificationTask(model, num_classes=3)
    trainer = Trainer(accelerator="cpu", max_epochs=1, progress="none", plugins=[DPSGD(epsilon=3)])
    with pytest.raises(ConfigError, match="dp: the model cannot be trained"):
        trainer.fit(task, DataLoader(TensorDataset(*tensors()), batch_size=8))


def test_sigkill_then_resume_keeps_the_accountant_and_gives_the_same_weights(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)

    reference = run("--run-dir", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = run("--run-dir", str(tmp_path / "run"), "--kill-at-step", "18")  # 14 steps per epoch: mid epoch 2
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["trainer"]["step"] == 16 and state["callbacks"]["dp"]["history"][0][2] == 16
    resumed = run("--run-dir", str(tmp_path / "run"), "--resume", str(last), "--kill-at-step", "16")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "run" / "model" / "model.safetensors")
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{key} differs after resume"
    ref_facts = json.loads((tmp_path / "ref" / "dp.json").read_text())
    facts = json.loads((tmp_path / "run" / "dp.json").read_text())
    assert facts["history"] == ref_facts["history"] and facts["epsilon"] == ref_facts["epsilon"] <= 2.0


def write_config(tmp_path: Path) -> Path:
    config = {
        "name": "cli-dp",
        "output_dir": str(tmp_path / "runs"),
        "data": {"name": "breast_cancer", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [8]},
        "trainer": {"max_epochs": 2, "progress": "none"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_generic_cli_flag_makes_a_run_private(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path)), "--dp", "epsilon=2,accountant=rdp"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "cli-dp").iterdir()
    facts = json.loads((run_dir / "dp.json").read_text())
    assert facts["accountant"] == "rdp" and 0 < facts["epsilon"] <= 2.0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["plugins"][0]["epsilon"] == 2


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("epsilon=0", "epsilon"),
        ("epsilon=3,delta=1", "delta"),
        ("max_grad_norm=1", "set epsilon"),
        ("epsilon=3,accountant=moments", "accountant"),
        ("epsilon=3,noise=2", "noise"),
    ],
)
def test_bad_dp_options_exit_2_with_one_line(tmp_path: Path, flag: str, message: str) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("tujie")), "train", str(write_config(tmp_path)), "--dp", flag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr


def test_the_nlp_cli_flag_trains_a_private_text_classifier(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path):
    from tujie_nlp.cli import app as nlp_app

    args = ["train", "--train", str(sentiment_csv), "--encoder", str(tiny_bert), "--epochs", "2"]
    args += ["--set", f"output_dir={tmp_path}", "--set", "transfer.freeze_layers=1", "--set", "data.batch_size=8"]
    shared = CliRunner().invoke(nlp_app, [*args, "--dp", "epsilon=8"])
    assert "transfer.freeze_embeddings=true" in str(shared.exception)  # position embeddings: one row per batch
    result = CliRunner().invoke(nlp_app, [*args, "--set", "transfer.freeze_embeddings=true", "--dp", "epsilon=8"])
    assert result.exit_code == 0, result.output
    (facts_file,) = tmp_path.rglob("dp.json")
    facts = json.loads(facts_file.read_text())
    assert 0 < facts["epsilon"] <= 8 and facts["steps"] == 2 * (facts["dataset_size"] // 8)  # 1/q per epoch
    report = (facts_file.parent / "report.md").read_text()
    assert "Differential privacy" in report
    # no non-private TF-IDF baseline on the same data beside a DP model
    assert "Not fitted: this is a DP run" in report and not (facts_file.parent / "baseline").exists()
