"""TextClassifier: training, save/load, multi-label, transfer-learning controls, the real MiniLM offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tujie_core import ConfigError
from tujie_nlp.classifier import METADATA_NAME, TextClassifier
from tujie_nlp.data import LabelVocab, read_texts
from tujie_nlp.encoders import MINILM_L6_SHA256, resolve_encoder, sha256
from tujie_nlp.modeling import (
    count_parameters,
    freeze,
    layer_of,
    layerwise_groups,
    shrink_encoder,
    symmetric_kl,
)

FAST = {"lr": 3e-3, "warmup_ratio": 0.0, "accelerator": "cpu", "seed": 0}


def test_fine_tuning_learns_and_a_saved_folder_predicts_identically(tiny_bert: Path, sentiment_csv: Path, tmp_path):
    table = read_texts(sentiment_csv)
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"], max_length=32)
    before = clf.evaluate(table).metrics["test/accuracy"]
    trainer = clf.fit(table, table, max_epochs=8, batch_size=8, **FAST)
    after = clf.evaluate(table).metrics["test/accuracy"]
    assert after >= 0.95 > before or after == 1.0
    assert trainer.state.history[-1]["val/loss"] < trainer.state.history[0]["val/loss"]
    assert clf.predict(["a wonderful , great film", "dull , boring and awful"]) == ["pos", "neg"]

    folder = clf.save_pretrained(tmp_path / "saved")
    assert {"model.safetensors", "config.json", METADATA_NAME, "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.bin"))  # no pickle
    loaded = TextClassifier.from_pretrained(folder)
    texts = table.texts[:10]
    assert torch.equal(clf.predict_proba(texts), loaded.predict_proba(texts))
    assert loaded.labels == clf.labels and loaded.max_length == 32
    # plain transformers reads the same folder with the label names
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(folder).id2label == {0: "neg", 1: "pos"}


def test_random_batches_and_weight_averaging_also_train(tiny_bert: Path, sentiment_csv: Path) -> None:
    table = read_texts(sentiment_csv)
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"], max_length=32)
    assert clf.loader(clf.dataset(table), 8, shuffle=True, group_by_length=False).batch_sampler.window == 1
    trainer = clf.fit(table, table, max_epochs=8, batch_size=8, group_by_length=False, ema_decay=0.5, **FAST)
    assert trainer.ema is not None and trainer.ema.updates == trainer.state.step == 40
    assert clf.evaluate(table).metrics["test/accuracy"] >= 0.95


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_predict_proba_keeps_input_order_and_ignores_padding(tiny_bert: Path, pooling: str) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["a", "b"], pooling=pooling)
    texts = ["short", "a much longer text with many more words in it", "mid length text here"]
    together = clf.predict_proba(texts, batch_size=2)
    one_by_one = torch.cat([clf.predict_proba([t]) for t in texts])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)


def test_multi_label_learns_independent_labels(tiny_bert: Path, tmp_path: Path) -> None:
    rows = [("high fever today", "infection"), ("a dry cough today", "respiratory"),
            ("high fever and a dry cough", "infection|respiratory"), ("a sore knee", "")] * 6  # fmt: skip
    path = tmp_path / "notes.csv"
    path.write_text("text,label\n" + "\n".join(f"{t},{lab}" for t, lab in rows) + "\n", encoding="utf-8")
    table = read_texts(path, multi_label=True)
    assert table.labels[:4] == [["infection"], ["respiratory"], ["infection", "respiratory"], []]  # none applies
    vocab = LabelVocab.from_labels(table.labels, multi_label=True)
    clf = TextClassifier.from_encoder(tiny_bert, vocab)
    assert clf.model.config.problem_type == "multi_label_classification"
    trainer = clf.fit(table, max_epochs=10, batch_size=2, **FAST)
    history = trainer.state.history
    assert history[-1]["train/loss"] < 0.7 * history[0]["train/loss"]
    texts = [t for t, _ in rows[:3]]
    assert clf.predict(texts) == [["infection"], ["respiratory"], ["infection", "respiratory"]]
    probs = clf.predict_proba(["high fever and a dry cough"])
    assert probs.shape == (1, 2) and 1.0 < float(probs.sum()) < 2.0  # sigmoids, not a softmax


def test_freezing_really_freezes(tiny_bert: Path, sentiment_csv: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    frozen = freeze(clf.model, embeddings=True, layers=1)
    bert = clf.model.hf_model.bert
    assert all(not p.requires_grad for p in bert.embeddings.parameters())
    assert all(not p.requires_grad for p in bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in bert.encoder.layer[1].parameters())
    assert len(frozen) == len(list(bert.embeddings.parameters())) + len(list(bert.encoder.layer[0].parameters()))
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    clf.fit(read_texts(sentiment_csv), max_epochs=1, batch_size=8, **FAST)
    after = clf.model.state_dict()
    for name in before:
        if ".embeddings." in name or ".layer.0." in name:
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["hf_model.bert.encoder.layer.1.output.dense.weight"],
                           after["hf_model.bert.encoder.layer.1.output.dense.weight"])  # fmt: skip


def test_feature_extraction_trains_only_the_head(tiny_bert: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    freeze(clf.model, encoder=True)
    trainable = [n for n, p in clf.model.named_parameters() if p.requires_grad]
    assert trainable == ["hf_model.classifier.weight", "hf_model.classifier.bias"]
    assert count_parameters(clf.model)[0] == 2 * 32 + 2
    with pytest.raises(ValueError, match=r"freeze_layers must be in \[0, 2\]"):
        freeze(clf.model, layers=3)


def test_layerwise_lr_decay_gives_lower_layers_smaller_rates(tiny_bert: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    assert layer_of("hf_model.bert.embeddings.word_embeddings.weight", 2) == 0
    assert layer_of("hf_model.bert.encoder.layer.1.output.dense.weight", 2) == 2
    assert layer_of("hf_model.classifier.weight", 2) == 3
    groups = layerwise_groups(clf.model, lr=1e-3, decay=0.5, weight_decay=0.01, num_layers=2)
    rates = {}
    for group in groups:
        for p in group["params"]:
            rates[id(p)] = (group["lr"], group["weight_decay"])
    named = dict(clf.model.named_parameters())
    assert rates[id(named["hf_model.classifier.weight"])] == (1e-3, 0.01)
    assert rates[id(named["hf_model.bert.encoder.layer.1.output.dense.weight"])] == (5e-4, 0.01)
    assert rates[id(named["hf_model.bert.embeddings.word_embeddings.weight"])] == (1.25e-4, 0.01)
    assert rates[id(named["hf_model.bert.embeddings.LayerNorm.bias"])] == (1.25e-4, 0.0)
    assert sum(len(g["params"]) for g in groups) == len(named)
    task = clf.task(optimizer={"name": "adamw", "lr": 1e-3}, layer_lr_decay=0.5)
    optimizer, _ = task.configure_optimizers(10)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == [1.25e-4, 2.5e-4, 5e-4, 1e-3]


def test_symmetric_kl_is_zero_for_equal_predictions_and_symmetric() -> None:
    a, b = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[0.0, 1.0, 0.5]])
    for softmax in (True, False):
        assert symmetric_kl(a, a, softmax).item() == pytest.approx(0.0, abs=1e-7)
        assert symmetric_kl(a, b, softmax).item() == pytest.approx(symmetric_kl(b, a, softmax).item())
    p, q = a.softmax(-1), b.softmax(-1)
    expected = ((p * (p / q).log()).sum() + (q * (q / p).log()).sum()) / 2
    assert symmetric_kl(a, b, True).item() == pytest.approx(expected.item(), rel=1e-5)


def test_rdrop_adds_the_dropout_consistency_term_in_training_only(tiny_bert: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"], dropout=0.3)
    ids = [torch.tensor(i) for i in clf.tokenize(["a wonderful film", "dull and terrible"])]
    pad = clf.tokenizer.pad_token_id
    batch = (torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=pad), torch.tensor([1, 0]))
    plain, rdrop = clf.task(), clf.task(rdrop=4.0)
    clf.model.eval()
    assert rdrop.step(batch).loss.item() == pytest.approx(plain.step(batch).loss.item())
    clf.model.train()
    torch.manual_seed(0)
    out = rdrop.step(batch)
    torch.manual_seed(0)
    logits = clf.model(torch.cat([batch[0], batch[0]]))
    first, second = logits.chunk(2)
    ce = (plain.loss(first, batch[1]) + plain.loss(second, batch[1])) / 2
    kl = symmetric_kl(first, second, True)
    assert kl.item() > 0  # two dropout masks, two predictions
    assert out.loss.item() == pytest.approx((ce + 4.0 * kl).item(), rel=1e-5)
    assert out.preds.shape == (2, 2) and out.num_items == 2
    with pytest.raises(ValueError, match="rdrop"):
        clf.task(rdrop=-1.0)


def test_pairs_get_segment_ids(tiny_bert: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["no", "yes"])
    ids = torch.tensor(clf.tokenize(["a cat"], ["a dog sat"]))
    seen = {}

    def capture(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.update(kwargs)

    handle = clf.model.hf_model.register_forward_pre_hook(capture, with_kwargs=True)
    clf.model(ids)
    handle.remove()
    sep = clf.tokenizer.sep_token_id
    first_sep = ids[0].tolist().index(sep)
    types = seen["token_type_ids"][0].tolist()
    assert types[: first_sep + 1] == [0] * (first_sep + 1) and set(types[first_sep + 1 :]) == {1}


def test_student_keeps_evenly_spaced_teacher_layers(tiny_bert: Path) -> None:
    clf = TextClassifier.from_encoder(tiny_bert, ["neg", "pos"])
    student = shrink_encoder(clf.model, 1)
    assert len(student.hf_model.bert.encoder.layer) == 1 and student.config.num_hidden_layers == 1
    assert clf.model.config.num_hidden_layers == 2  # the teacher is untouched
    torch.testing.assert_close(
        student.hf_model.bert.encoder.layer[0].output.dense.weight,
        clf.model.hf_model.bert.encoder.layer[1].output.dense.weight,
    )
    with pytest.raises(ValueError, match="a student needs 1 to 1 layers"):
        shrink_encoder(clf.model, 2)


def test_bad_encoder_names_are_clear(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        TextClassifier.from_encoder(tmp_path / "empty", ["a", "b"])
    with pytest.raises(ConfigError, match="not a registered encoder, nor a local folder"):
        TextClassifier.from_encoder("no-such-org/no-such-model", ["a", "b"])


def test_the_real_minilm_loads_offline_with_its_published_weights() -> None:
    path = Path(resolve_encoder("minilm-l6"))
    assert sha256(path / "model.safetensors") == MINILM_L6_SHA256
    clf = TextClassifier.from_encoder("minilm-l6", ["neg", "pos"])
    config = clf.model.config
    assert (config.num_hidden_layers, config.hidden_size) == (6, 384)
    assert clf.model.pooling == "mean"  # how sentence-transformers trained it
    assert 22_000_000 < count_parameters(clf.model)[1] < 23_000_000
    assert clf.predict_proba(["offline and fast"]).shape == (1, 2)


def test_mean_pooling_is_saved_and_differs_from_the_cls_head(tiny_bert: Path, tmp_path: Path) -> None:
    assert TextClassifier.from_encoder(tiny_bert, ["a", "b"]).model.pooling == "cls"  # no sentence-transformers config
    torch.manual_seed(0)
    mean = TextClassifier.from_encoder(tiny_bert, ["a", "b"], pooling="mean")
    cls_head = TextClassifier(
        type(mean.model)(mean.model.hf_model, mean.tokenizer.pad_token_id, mean.tokenizer.sep_token_id, "cls"),
        mean.tokenizer,
        mean.labels,
    )
    texts = ["one text", "and another longer one"]
    assert not torch.allclose(mean.predict_proba(texts), cls_head.predict_proba(texts))
    loaded = TextClassifier.from_pretrained(mean.save_pretrained(tmp_path / "m"))
    assert loaded.model.pooling == "mean"
    assert torch.equal(loaded.predict_proba(texts), mean.predict_proba(texts))
    with pytest.raises(ConfigError, match="pooling must be one of"):
        TextClassifier.from_encoder(tiny_bert, ["a", "b"], pooling="max")


def test_truncation_reads_the_head_the_tail_or_both_ends(tiny_bert: Path, tmp_path: Path) -> None:
    document = " ".join(f"w{i}" for i in range(300))  # far longer than 16 tokens
    heads = {}
    for truncation in ("head", "tail", "head+tail"):
        clf = TextClassifier.from_encoder(tiny_bert, ["a", "b"], max_length=16, truncation=truncation)
        (ids,) = clf.tokenize([document])
        assert len(ids) == 16 and ids[0] == clf.tokenizer.cls_token_id and ids[-1] == clf.tokenizer.sep_token_id
        heads[truncation] = clf.tokenizer.decode(ids[1:-1])
        assert clf.tokenize(["short text"]) == TextClassifier.from_encoder(tiny_bert, ["a", "b"]).tokenize(
            ["short text"]
        )
    whole = clf.tokenizer(document, add_special_tokens=False)["input_ids"]
    decode = clf.tokenizer.decode
    assert heads["head"] == decode(whole[:14]) and heads["tail"] == decode(whole[-14:])
    assert heads["head+tail"] == decode(whole[:3] + whole[-11:])  # a quarter of 14 from the head, the rest the tail
    saved = TextClassifier.from_pretrained(clf.save_pretrained(tmp_path / "model"))
    assert saved.truncation == "head+tail" and saved.tokenize([document]) == clf.tokenize([document])
    with pytest.raises(ConfigError, match="truncation must be one of"):
        TextClassifier.from_encoder(tiny_bert, ["a", "b"], truncation="middle")
