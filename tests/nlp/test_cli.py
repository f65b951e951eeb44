"""``tujie nlp``: the commands work end to end on a tiny model; user errors print one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def trained(tujie, tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> Path:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"name: cli\noutput_dir: {tmp_path / 'runs'}\nencoder: {tiny_bert}\n"
        "data: {val_fraction: 0.25, batch_size: 8}\noptimizer: {lr: 0.003}\n"
        "trainer: {max_epochs: 2, accelerator: cpu, progress: none}\n"
    )
    result = tujie("nlp", "train", str(config), "--train", str(sentiment_csv), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "val/accuracy" in result.stdout
    (run,) = (tmp_path / "runs" / "cli").iterdir()
    return run / "model"


def test_evaluate_predict_and_explain(tujie, trained: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    result = tujie("nlp", "evaluate", str(trained), str(sentiment_csv), "--output-dir", "eval", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test/accuracy" in result.stdout and (tmp_path / "eval" / "report.md").is_file()

    inbox = tmp_path / "inbox.csv"
    inbox.write_text('text\ngreat fun\n""\nhated it\n', encoding="utf-8")
    result = tujie("nlp", "predict", str(trained), str(inbox), "pred.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "predicted 2 row(s)" in result.stdout
    assert "line 3: column 'text': empty text" in result.stderr
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 3

    result = tujie("nlp", "explain", str(trained), "a wonderful film", "--output", "ig.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wonderful" in result.stdout and (tmp_path / "ig.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "missing.yaml"], "missing.yaml: no such file"),
        (["train", "--train", "missing.csv", "--set", "encoder=ENCODER"], "missing.csv: no such file"),
        (["train", "--set", "data.max_lenght=5"], "data.max_lenght: unknown key"),
        (["train", "--set", "data.text_column=body", "--set", "encoder=ENCODER"], "no column(s) 'body'"),
        (["predict", "no-model", "in.csv", "out.csv"], "not a tujie text classifier folder"),
        (["train", "--encoder", "EMPTY"], "not a Hugging Face model folder"),
        (["pretrain", "missing.txt", "out", "--encoder", "ENCODER"], "missing.txt: no such file"),
        (["pretrain", "a.txt", "out", "--precision", "bf17"], "precision: Input should be '32-true'"),
        (["train", "--encoder", "ENCODER", "--windows", "64/64"], "windows.stride must be in [1, windows.size = 64)"),
        (["train", "--encoder", "ENCODER", "--windows", "256/96"], "windows.size 256 is above the encoder's limit"),
        (["train", "--windows", "long"], "--windows: expected SIZE/STRIDE in tokens"),
        (["train", "--pool", "max"], "--pool and --max-windows go with --windows SIZE/STRIDE"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tujie, tiny_bert: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "EMPTY").mkdir()
    args = [a.replace("ENCODER", str(tiny_bert)) for a in args]
    result = tujie("nlp", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
