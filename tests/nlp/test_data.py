"""Reading labelled text: formats, bad rows kept out but reported, labels, length-grouped batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tujie_core import DataError
from tujie_nlp.data import LabelVocab, LengthGroupedBatchSampler, PadCollator, read_texts


def test_csv_reads_quoted_fields_and_reports_bad_rows_by_line(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(
        b'text,label\n"great, really great",pos\n"",neg\nterrible,\nbad \xff\xfe bytes,neg\n'
        b'"a quoted ""word""",neg\nshort row\n"multi\nline text",pos\n'
    )
    table = read_texts(path)
    assert table.texts == ["great, really great", 'a quoted "word"', "multi\nline text"]
    assert table.labels == [["pos"], ["neg"], ["pos"]]
    assert table.lines == [2, 6, 8]
    reasons = {row.line: row.reason for row in table.bad}
    assert set(reasons) == {3, 4, 5, 7}
    assert "empty text" in reasons[3]
    assert "empty label" in reasons[4]
    assert "not UTF-8" in reasons[5]
    assert "missing field" in reasons[7]
    assert "skipped 4 bad row(s)" in table.bad_report()


def test_glue_tsv_keeps_bare_quotes(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text('sentence\tlabel\nit \'s a " quirky " film \t1\nflat \t0\n', encoding="utf-8")
    table = read_texts(path, text_column="sentence")
    assert table.texts == ['it \'s a " quirky " film ', "flat "]
    assert table.labels == [["1"], ["0"]]


def test_jsonl_lists_are_multi_label_and_bad_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    lines = [
        json.dumps({"text": "chest pain and fever", "label": ["cardio", "infection"]}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"text": "cough", "label": ["infection"]}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = read_texts(path)
    assert table.labels == [["cardio", "infection"], ["infection"]]
    assert [b.line for b in table.bad] == [2, 3]


def test_label_separator_splits_labels(tmp_path: Path) -> None:
    path = tmp_path / "tickets.csv"
    path.write_text("text,label\nrefund for a late parcel,billing|delivery\n", encoding="utf-8")
    assert read_texts(path, label_separator="|").labels == [["billing", "delivery"]]


def test_datasets_folder_and_parquet(tmp_path: Path) -> None:
    import datasets

    data = datasets.Dataset.from_dict({"review": ["good", "", "bad"], "stars": ["5", "1", "1"]})
    data.save_to_disk(str(tmp_path / "saved"))
    table = read_texts(tmp_path / "saved", text_column="review", label_column="stars")
    assert table.texts == ["good", "bad"]
    assert [b.line for b in table.bad] == [1]
    data.to_parquet(str(tmp_path / "reviews.parquet"))
    assert read_texts(tmp_path / "reviews.parquet", text_column="review", label_column="stars").texts == ["good", "bad"]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "no such file"),
        ("text,label\nx,y\n", {"text_column": "body"}, "no column(s) 'body' (columns: text, label)"),
        ("", {}, "empty"),
    ],
)
def test_whole_file_problems_name_the_file(tmp_path: Path, content: str | None, kwargs: dict, message: str) -> None:
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=str(path)) as info:
        read_texts(path, **kwargs)
    assert message in str(info.value)


def test_unknown_ending_asks_for_a_format(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match="set format"):
        read_texts(path)


def test_label_vocab_orders_integers_numerically_and_encodes() -> None:
    vocab = LabelVocab.from_labels([["10"], ["2"], ["1"], ["2"]])
    assert vocab.names == ["1", "2", "10"]
    assert vocab.encode([["10"], ["1"]]).tolist() == [2, 0]
    with pytest.raises(DataError, match=r"label\(s\) \['7'\] not in the training labels"):
        vocab.encode([["7"]])
    multi = LabelVocab.from_labels([["b", "a"], ["a"]], multi_label=True)
    assert multi.encode([["b", "a"], ["a"]]).tolist() == [[1.0, 1.0], [1.0, 0.0]]
    with pytest.raises(DataError, match="set multi_label"):
        LabelVocab.from_labels([["a", "b"]])


def test_balanced_class_weights_follow_sklearn() -> None:
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    labels = [["a"]] * 6 + [["b"]] * 2 + [["c"]]
    vocab = LabelVocab.from_labels(labels)
    expected = compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=[row[0] for row in labels])
    assert vocab.balanced_weights(labels) == pytest.approx(expected.tolist())


def test_length_grouped_batches_cover_every_index_once_and_depend_on_the_epoch() -> None:
    lengths = [int(x) for x in torch.randint(3, 60, (500,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedBatchSampler(lengths, 16, seed=3, window=4)
    first = list(sampler)
    assert len(first) == len(sampler) == 32
    assert sorted(i for batch in first for i in batch) == list(range(500))
    assert list(sampler) == first  # same epoch, same order (resume)
    sampler.set_epoch(1)
    assert list(sampler) != first
    # grouping: padding waste far below that of random batches
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in first)
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(1)).tolist()
    random_batches = [perm[i : i + 16] for i in range(0, 500, 16)]
    random_waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in random_batches)
    assert waste < 0.3 * random_waste


def test_a_window_of_one_batch_gives_plain_random_batches() -> None:
    lengths = [int(x) for x in torch.randint(3, 60, (500,), generator=torch.Generator().manual_seed(0))]
    batches = list(LengthGroupedBatchSampler(lengths, 16, seed=3, window=1))
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(3)).tolist()
    assert {frozenset(b) for b in batches} == {frozenset(perm[i : i + 16]) for i in range(0, 500, 16)}


def test_pad_collator_pads_each_batch_to_its_longest_row() -> None:
    ids, target = PadCollator(0)([([101, 5, 102], torch.tensor(1)), ([101, 102], torch.tensor(0))])
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert target.tolist() == [1, 0]
