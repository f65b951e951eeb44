"""Fine-tuning runs from a config, exact resume, prediction files with bad rows, domain pre-training, compression."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tujie_core import ConfigError, DataError, train_from_config
from tujie_core.compress import quantize_dynamic
from tujie_nlp.classifier import TextClassifier
from tujie_nlp.compress import compress_text
from tujie_nlp.data import read_texts
from tujie_nlp.pretrain import MaskingCollator, pretrain_mlm
from tujie_nlp.run import bundled_data, load_tables, load_text_config, predict_file


def config_for(tiny_bert: Path, data: Path, out: Path, *extra: str):
    return load_text_config(
        None,
        [
            f"encoder={tiny_bert}",
            f"data.train={data}",
            "data.val_fraction=0.25",
            "data.batch_size=8",
            "optimizer.lr=0.003",
            "trainer.max_epochs=4",
            "trainer.accelerator=cpu",
            "trainer.progress=none",
            f"output_dir={out}",
            *extra,
        ],
    )


def test_a_run_folder_has_model_report_and_metrics(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    result = train_from_config(config_for(tiny_bert, sentiment_csv, tmp_path, "data.test_fraction=0.25"))
    run = result.run_dir
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "report.md", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert {"val/accuracy", "test/accuracy", "test/f1_macro"} <= set(result.metrics)
    assert (
        len(result.details["tables"]["train"]) == 20
        and len(result.details["tables"]["val"]) == 10
        and len(result.details["tables"]["test"]) == 10
    )
    report = (run / "report.md").read_text()
    assert "## Data" in report and "Encoder:" in report
    # the classical baseline on the same splits, side by side, with a verdict sentence
    assert {"baseline/val/accuracy", "baseline/test/accuracy", "baseline/test/f1_macro"} <= set(result.metrics)
    assert "## Classical baseline" in report and "| test | accuracy |" in report
    assert ("The baseline wins" in report) == (
        result.metrics["baseline/test/accuracy"] >= result.metrics["test/accuracy"]
    )
    assert (run / "baseline" / "baseline.safetensors").is_file()
    loaded = TextClassifier.from_pretrained(run / "model")
    assert loaded.labels.names == ["neg", "pos"]
    test = result.details["tables"]["test"]
    assert loaded.evaluate(test).metrics["test/accuracy"] == pytest.approx(result.metrics["test/accuracy"])


def test_resume_continues_exactly(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    # a constant learning rate, so that a 1-epoch run resumed to 2 epochs and a 2-epoch run share one schedule;
    # R-Drop's two dropout passes make the result depend on the restored RNG state
    constant = ("scheduler=null", "rdrop=0.5")
    straight = train_from_config(
        config_for(tiny_bert, sentiment_csv, tmp_path / "a", "trainer.max_epochs=2", *constant)
    )
    first = train_from_config(config_for(tiny_bert, sentiment_csv, tmp_path / "b", "trainer.max_epochs=1", *constant))
    resumed_config = config_for(tiny_bert, sentiment_csv, tmp_path / "b", "trainer.max_epochs=2", *constant)
    resumed = train_from_config(resumed_config, resume=first.run_dir)
    assert resumed.run_dir == first.run_dir
    logged = [json.loads(line)["epoch"] for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2]  # continued at epoch 2; a restart would have logged 1, 1, 2
    a = torch.load(straight.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bundled_tickets_are_the_default_data() -> None:
    tables = load_tables(load_text_config(None, ["data.test_fraction=0.2"]).data)
    assert tables["train"].path == bundled_data()
    sizes = {k: len(t) for k, t in tables.items()}
    assert sizes == {"train": 280, "val": 40, "test": 80}
    assert not tables["train"].bad
    counts = {name: sum(row == [name] for row in tables["test"].labels) for name in ("billing", "technical")}
    assert counts == {"billing": 20, "technical": 20}  # stratified


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.max_lenght: unknown key \(did you mean 'max_length'\?\)"):
        load_text_config(None, ["data.max_lenght=64"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {max_epochs: zero}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: trainer.max_epochs"):
        load_text_config(bad)


def test_training_skips_and_records_bad_rows(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    with sentiment_csv.open("a", encoding="utf-8") as handle:
        handle.write('"",pos\n"no label here",\n')
    result = train_from_config(config_for(tiny_bert, sentiment_csv, tmp_path, "trainer.max_epochs=1"))
    assert [b.line for b in result.details["bad_rows"]["train"]] == [42, 43]
    assert "line 42: column 'text': empty text" in (result.run_dir / "bad_rows.txt").read_text()


def test_predict_file_reports_bad_rows_and_predicts_every_good_one(tiny_bert: Path, tmp_path: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    source = tmp_path / "inbox.csv"
    source.write_bytes(b'id,text\n1,first good\n2,\n3,caf\xe9 latin-1\n4\n5,"second, good"\n6,third good\n')
    summary = predict_file(clf, source, tmp_path / "out" / "pred.csv")
    assert summary.predicted == 3
    assert [(b.row, b.reason) for b in summary.examples] == [
        (3, "column 'text': empty text"),
        (4, "column 'text': bytes that are not UTF-8"),
        (5, "missing field(s) 'text'"),
    ]
    with summary.output.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["line"] for r in rows] == ["2", "6", "7"]
    assert [r["text"] for r in rows] == ["first good", "second, good", "third good"]
    probs = clf.predict_proba(["first good", "second, good", "third good"])
    for row, p in zip(rows, probs, strict=True):
        assert float(row["p_neg"]) + float(row["p_pos"]) == pytest.approx(1.0, abs=1e-5)
        assert float(row["p_pos"]) == pytest.approx(float(p[1]), abs=1e-6)
        assert row["label"] == ("pos" if p[1] > p[0] else "neg")
    errors = summary.output.with_name("pred.csv.rejects.csv").read_text()
    assert "4,column 'text': bytes that are not UTF-8" in errors and summary.rejects.name == "pred.csv.rejects.csv"
    assert summary.rows == summary.predicted + summary.rejected == 6


def test_masking_follows_bert(tiny_bert: Path) -> None:
    from tujie_nlp.encoders import load_tokenizer

    tokenizer = load_tokenizer(tiny_bert)
    collate = MaskingCollator(tokenizer, 0.15, torch.Generator().manual_seed(0))
    ids = tokenizer(["the quick brown fox jumps over the lazy dog again and again"] * 200)["input_ids"]
    masked, labels = collate([(row,) for row in ids])
    original = torch.tensor(ids)
    chosen = labels != -100
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], original[chosen]) and torch.equal(masked[~chosen], original[~chosen])
    assert 0.12 < chosen.float().sum() / (~special).sum() < 0.18
    share_mask = (masked[chosen] == tokenizer.mask_token_id).float().mean()
    assert 0.75 < share_mask < 0.85
    one_word = collate([(tokenizer("hi")["input_ids"],)] * 50)[1]
    assert ((one_word != -100).sum(-1) == 1).all()  # short lines still get one masked token


def test_pretraining_lowers_the_masked_lm_loss_and_feeds_fine_tuning(tiny_bert: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    lines = ["the patient reports chest pain radiating to the left arm", "ecg shows st elevation in leads"] * 20
    text.write_bytes("\n".join(lines).encode() + b"\nbad \xff line\n\n")
    result = pretrain_mlm(
        text, tmp_path / "adapted", encoder=tiny_bert, max_epochs=3, batch_size=8, lr=3e-3, progress="none"
    )
    assert result.val_loss_after < result.val_loss_before - 0.5
    assert [b.line for b in result.bad_rows] == [41]
    assert (result.model_dir / "model.safetensors").is_file()
    clf = TextClassifier.from_encoder(result.model_dir, ["a", "b"])
    adapted = load_file(str(result.model_dir / "model.safetensors"))
    torch.testing.assert_close(
        clf.model.hf_model.bert.embeddings.word_embeddings.weight, adapted["bert.embeddings.word_embeddings.weight"]
    )
    assert TextClassifier.from_encoder(result.model_dir, ["a", "b"]).model.pooling == "cls"  # as tiny_bert
    with pytest.raises(DataError, match="no such file"):
        pretrain_mlm(tmp_path / "missing.txt", tmp_path / "x", encoder=tiny_bert)


def test_an_adapted_sentence_encoder_keeps_mean_pooling(tiny_bert: Path, tmp_path: Path) -> None:
    encoder = shutil.copytree(tiny_bert, tmp_path / "sentence-encoder")
    (encoder / "1_Pooling").mkdir()
    (encoder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    assert TextClassifier.from_encoder(encoder, ["a", "b"]).model.pooling == "mean"
    text = tmp_path / "lines.txt"
    text.write_text("a first line\na second line\n")
    result = pretrain_mlm(text, tmp_path / "adapted", encoder=encoder, max_steps=1, batch_size=2, progress="none")
    assert TextClassifier.from_encoder(result.model_dir, ["a", "b"]).model.pooling == "mean"


def test_compression_table_and_a_loadable_student(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    table = read_texts(sentiment_csv)
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    clf.fit(table, max_epochs=6, batch_size=8, lr=3e-3, warmup_ratio=0.0, accelerator="cpu")
    result = compress_text(
        clf, table, tmp_path / "c", options={"distil": {"layers": 1, "epochs": 2}}, train_table=table, repeats=3
    )
    fp32, int8, distil = result.rows
    assert [fp32.method, int8.method, distil.method] == ["fp32", "int8", "distil"]
    assert int8.size_mb < fp32.size_mb and distil.parameters < fp32.parameters
    assert int8.metric is not None and distil.metric is not None
    # the tiny model's probabilities sit near 0.5, so compare them, not its accuracy, with the int8 model's
    int8_clf = TextClassifier(quantize_dynamic(clf.model), clf.tokenizer, clf.labels)
    torch.testing.assert_close(int8_clf.predict_proba(table.texts), clf.predict_proba(table.texts), atol=0.02, rtol=0)
    assert all(r.throughput > 0 and r.throughput_unit == "sent/s" for r in result.rows)
    assert "sent/s" in (tmp_path / "c" / "compression.md").read_text()
    student = TextClassifier.from_pretrained(tmp_path / "c" / "student")
    assert student.model.config.num_hidden_layers == 1
    assert all(p.requires_grad for p in clf.model.parameters())  # the teacher is handed back trainable
    with pytest.raises(ConfigError, match="'int4' is not in the compressors registry"):
        compress_text(clf, table, tmp_path / "d", methods=["int4"])
    with pytest.raises(ConfigError, match=r"compress\.distil\.layer: unknown key"):
        compress_text(clf, table, tmp_path / "d", options={"distil": {"layer": 1}}, train_table=table)
    with pytest.raises(ConfigError, match="needs labelled training text"):
        compress_text(clf, table, tmp_path / "d", methods=["distil"])


def test_text_runs_go_through_the_generic_train_tune_and_cv(
    tujie, tiny_bert: Path, sentiment_csv: Path, tmp_path: Path
):
    import yaml

    raw = {
        "kind": "text_classification",
        "name": "sentiment",
        "output_dir": str(tmp_path / "runs"),
        "encoder": str(tiny_bert),
        "data": {"train": str(sentiment_csv), "val_fraction": 0.25, "batch_size": 8},
        "optimizer": {"lr": 0.003},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "progress": "none"},
        "tune": {"space": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, "trials": 2},
    }
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(raw))
    trained = tujie("train", str(path), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "val/accuracy" in trained.stdout
    (run_dir,) = (tmp_path / "runs" / "sentiment").glob("2*")
    assert (run_dir / "model" / "tujie_nlp.json").is_file()  # a text classifier folder, as tujie nlp train writes
    compressed = tujie("compress", str(run_dir), "--methods", "int8", cwd=tmp_path)  # core's verb, text run
    assert compressed.returncode == 0, compressed.stderr
    assert "| int8 |" in compressed.stdout and "sent/s" in (run_dir / "compression" / "compression.md").read_text()
    assert "## Compression" in (run_dir / "report.md").read_text()
    tuned = tujie("tune", str(path), cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    assert load_text_config(tmp_path / "runs" / "sentiment" / "tune" / "best.yaml").kind == "text_classification"
    from tujie_core.evaluate import cross_validate

    cv = cross_validate(load_text_config(path), 2)
    assert len(cv.run_dirs) == 2 and all((d / "model" / "tujie_nlp.json").is_file() for d in cv.run_dirs)
    assert cv.mean["val/accuracy"] == pytest.approx(sum(f["val/accuracy"] for f in cv.folds) / 2)
    from tujie_nlp.run import TextClassificationRun

    parts = TextClassificationRun().folds(load_text_config(path), 2, stratified=True)
    held_out = [part["val"].lines for part in parts]
    assert not set(held_out[0]) & set(held_out[1]) and len(held_out[0]) + len(held_out[1]) == 40


def test_predict_file_interrupted_then_rerun_matches_an_uninterrupted_run(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    source = tmp_path / "big.jsonl"
    lines = [json.dumps({"text": f"message number {i} " + "word " * (i % 9)}) for i in range(300)]
    lines[123] = "{not json"
    source.write_text("\n".join(lines) + "\n")
    whole = predict_file(clf, source, tmp_path / "whole.csv", chunk_size=40, workers=2)

    real, calls = TextClassifier.predict_ids, 0

    def interrupted(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the file
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TextClassifier, "predict_ids", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict_file(clf, source, tmp_path / "part.csv", chunk_size=40, workers=2)
    monkeypatch.setattr(TextClassifier, "predict_ids", real)
    resumed = predict_file(clf, source, tmp_path / "part.csv", chunk_size=40, workers=2)
    assert resumed.resumed_from == 120 and (resumed.rows, resumed.predicted, resumed.rejected) == (300, 299, 1)
    assert (tmp_path / "part.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert (
        tmp_path / "part.csv.rejects.csv"
    ).read_text() == "line,reason\n124,invalid JSON (Expecting property name enclosed in double quotes at column 2)\n"
    assert whole.predicted == 299


def test_truncation_and_baseline_options_are_checked_in_the_config() -> None:
    config = load_text_config(None, ["data.truncation=head+tail", "baseline=false"])
    assert config.data.truncation == "head+tail" and not config.baseline
    with pytest.raises(ConfigError, match="truncation"):
        load_text_config(None, ["data.truncation=middle"])
