"""Long documents as pooled windows: spans, batching, equivalence with the plain model, training, resume, saving,
prediction, explanation and compression."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_run import config_for as run_config_for

from tujie_core import ConfigError, train_from_config
from tujie_nlp.classifier import TextClassifier
from tujie_nlp.compress import compress_text
from tujie_nlp.data import read_texts
from tujie_nlp.explain import explain
from tujie_nlp.run import load_text_config, predict_file
from tujie_nlp.windows import WindowBatchSampler, WindowCollator, window_spans

FILLER = "the committee met on tuesday and read the minutes of the previous meeting aloud"


def test_spans_cover_the_text_every_stride_and_keep_first_and_last_when_capped() -> None:
    assert window_spans(10, 16, 8, 4) == [(0, 10)]
    spans = window_spans(100, 16, 12, 20)
    assert spans[0] == (0, 16) and spans[-1][1] == 100
    assert all(b[0] - a[0] == 12 for a, b in itertools.pairwise(spans))
    assert set(range(100)) <= {i for a, b in spans for i in range(a, b)}
    capped = window_spans(100, 16, 12, 3)
    assert capped == [spans[0], spans[len(spans) // 2], spans[-1]]
    assert window_spans(100, 16, 12, 1) == [(0, 16)]


def test_window_batches_hold_whole_documents_within_the_budget_and_resume_in_order() -> None:
    counts = [1, 3, 2, 4, 1, 1, 2, 3, 4, 2, 1, 3]
    sampler = WindowBatchSampler(counts, 6, shuffle=True, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(counts)))
        assert all(sum(counts[i] for i in b) <= 6 for b in batches)
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    again = WindowBatchSampler(counts, 6, shuffle=True, seed=3)
    again.set_epoch(1)
    assert list(again) == epochs[1]
    with pytest.raises(ConfigError, match="fewer windows than one document has"):
        WindowBatchSampler(counts, 3)


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_one_window_gives_the_plain_models_probabilities(tiny_bert: Path, pool: str, pooling: str) -> None:
    torch.manual_seed(0)
    plain = TextClassifier.from_encoder(tiny_bert, ["a", "b", "c"], max_length=64, pooling=pooling)
    windowed = TextClassifier.from_encoder(
        tiny_bert, ["a", "b", "c"], pooling=pooling, windows={"size": 64, "stride": 48, "pool": pool}
    )
    windowed.model.hf_model.load_state_dict(plain.model.hf_model.state_dict())
    if windowed.model.window_attention is not None:
        torch.nn.init.normal_(windowed.model.window_attention.weight)
    texts = [FILLER, "short", "great fun"]
    torch.testing.assert_close(windowed.predict_proba(texts), plain.predict_proba(texts), rtol=0, atol=1e-6)


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
def test_prediction_in_window_length_order_matches_document_batches(tiny_bert: Path, pool: str) -> None:
    torch.manual_seed(0)
    windows = {"size": 16, "stride": 12, "max_windows": 4, "pool": pool}
    clf = TextClassifier.from_encoder(tiny_bert, ["a", "b", "c"], windows=windows)
    if clf.model.window_attention is not None:
        torch.nn.init.normal_(clf.model.window_attention.weight)
    words = FILLER.split() * 5
    texts = [" ".join(words[:n]) for n in (3, 14, 20, 9, 70, 27)]
    assert sorted(len(w) for w in clf.tokenize(texts)) == [1, 1, 1, 2, 3, 4]
    batch = WindowCollator(clf.tokenizer.pad_token_id)([(ids,) for ids in clf.tokenize(texts)])
    expected = clf.model(batch["input_ids"], batch["doc_index"]).softmax(-1)
    torch.testing.assert_close(clf.predict_proba(texts, batch_size=4), expected, rtol=0, atol=1e-6)


def _documents(path: Path, decisive_at: str, count: int) -> Path:
    """Texts whose label is set by one word: ``early`` puts it anywhere, ``late`` only after the filler."""
    rows, generator = [], torch.Generator().manual_seed(len(decisive_at) + count)
    for i in range(count):
        label = ("pos", "neg")[i % 2]
        word = {"pos": "excellent wonderful", "neg": "terrible awful"}[label]
        filler = FILLER.split()
        at = int(torch.randint(len(filler) + 1, (1,), generator=generator)) if decisive_at == "early" else None
        words = filler[:at] + word.split() + filler[at:] if at is not None else filler * 2 + word.split()
        rows.append((" ".join(words), label))
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    return path


def test_decisive_text_past_the_first_window_changes_the_prediction(tiny_bert: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    clf = TextClassifier.from_encoder(
        tiny_bert, ["neg", "pos"], windows={"size": 16, "stride": 14, "max_windows": 4, "pool": "max"}
    )
    train = read_texts(_documents(tmp_path / "train.csv", "early", 64))
    clf.fit(train, batch_size=16, lr=3e-3, max_epochs=15, accelerator="cpu")
    late = read_texts(_documents(tmp_path / "late.csv", "late", 2))
    assert all(len(windows) > 1 for windows in clf.tokenize(late.texts))  # the word is past the first window
    assert clf.predict(late.texts) == ["pos", "neg"]
    first_window = TextClassifier(clf.model, clf.tokenizer, clf.labels, windows=replace(clf.windows, max_windows=1))
    one, other = first_window.predict_proba(late.texts)
    torch.testing.assert_close(one, other)  # it cannot tell them apart


def config_for(tiny_bert: Path, data: Path, out: Path, *extra: str):
    windows = ("data.windows.size=16", "data.windows.stride=12", "data.windows.max_windows=4")
    return run_config_for(tiny_bert, data, out, *windows, *extra)


def test_a_windowed_run_resumes_exactly_and_saves_predicts_and_explains(tiny_bert: Path, tmp_path: Path) -> None:
    data = _documents(tmp_path / "docs.csv", "early", 32)
    constant = ("scheduler=null", "data.windows.pool=attention", "baseline=false")
    straight = train_from_config(config_for(tiny_bert, data, tmp_path / "a", "trainer.max_epochs=2", *constant))
    first = train_from_config(config_for(tiny_bert, data, tmp_path / "b", "trainer.max_epochs=1", *constant))
    resumed = train_from_config(
        config_for(tiny_bert, data, tmp_path / "b", "trainer.max_epochs=2", *constant), resume=first.run_dir
    )
    a = torch.load(straight.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    assert any(k.startswith("window_attention.") for k in a) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "windows of 16 tokens every 12 tokens (at most 4 per text), `attention` pooling" in (
        resumed.run_dir / "report.md"
    ).read_text(encoding="utf-8")

    folder = resumed.run_dir / "model"
    assert json.loads((folder / "tujie_nlp.json").read_text())["windows"]["pool"] == "attention"
    loaded = TextClassifier.from_pretrained(folder)
    texts = read_texts(data).texts[:6]
    torch.testing.assert_close(loaded.predict_proba(texts), resumed.model.predict_proba(texts))

    summary = predict_file(loaded, data, tmp_path / "pred.csv", batch_size=4)
    assert summary.predicted == 32
    with (tmp_path / "pred.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    probs = loaded.predict_proba(read_texts(data).texts)
    assert [float(r["p_pos"]) for r in rows] == pytest.approx(probs[:, 1].tolist(), abs=1e-5)

    long_text = " ".join([FILLER] * 3 + ["excellent"])
    e = explain(loaded, long_text, method="ig", steps=64)
    assert len(e.tokens) == len(loaded.tokenizer(long_text, add_special_tokens=False)["input_ids"]) > 16
    assert e.tokens[-1] == "excellent"  # attributions reach past the first window
    assert e.delta is not None and abs(e.delta) < 1e-2
    rollout = explain(loaded, long_text, method="rollout")
    assert len(rollout.tokens) == len(e.tokens) and sum(rollout.scores) == pytest.approx(1.0)


def test_compressing_a_windowed_classifier(tiny_bert: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"], windows={"size": 16, "stride": 12, "max_windows": 4})
    table = read_texts(_documents(tmp_path / "docs.csv", "early", 12))
    options = {"distil": {"layers": 1, "epochs": 1}}
    result = compress_text(
        clf, table, tmp_path / "out", methods=["int8", "distil"], options=options, train_table=table, repeats=2
    )
    assert {row.method for row in result.rows} >= {"int8", "distil"}
    student = TextClassifier.from_pretrained(tmp_path / "out" / "student")
    assert student.windows == clf.windows and student.model.config.num_hidden_layers == 1
    with pytest.raises(ConfigError, match=r"compress\.onnx"):
        compress_text(clf, table, tmp_path / "onnx", methods=["onnx"])


def test_window_options_are_checked(tiny_bert: Path) -> None:
    def make(**windows: object) -> TextClassifier:
        return TextClassifier.from_encoder(tiny_bert, ["a", "b"], windows=windows)

    assert TextClassifier.from_encoder(tiny_bert, ["a", "b"], max_length=1000).max_length == 128  # its positions
    with pytest.raises(ConfigError, match=r"windows.stride must be in \[1, windows.size = 32\), got 32"):
        make(size=32, stride=32)
    with pytest.raises(ConfigError, match="windows\\.size 256 is above the encoder's limit of 128 tokens"):
        make(size=256, stride=64)
    with pytest.raises(ConfigError, match="skips text"):
        make(size=32, stride=31)
    with pytest.raises(ConfigError, match="text pairs"):
        make(size=32, stride=16).tokenize(["a"], ["b"])
    with pytest.raises(ConfigError, match="truncation"):
        TextClassifier.from_encoder(tiny_bert, ["a", "b"], truncation="tail", windows={"size": 32, "stride": 16})
    with pytest.raises(ConfigError, match="batch_size 4 counts windows"):
        load_text_config(None, ["data.batch_size=4", "data.windows.max_windows=8"])
    windowed = [f"encoder={tiny_bert}", "data.windows.size=32", "data.windows.stride=16"]
    with pytest.raises(ConfigError, match="micro_batch_size"):
        train_from_config(load_text_config(None, [*windowed, "trainer.micro_batch_size=4"]))
    with pytest.raises(ConfigError, match="DP-SGD"):
        train_from_config(
            load_text_config(
                None, [f"encoder={tiny_bert}", "data.windows.size=32", "data.windows.stride=16"], {"dp": ""}
            )
        )
