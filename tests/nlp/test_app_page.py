"""The app's Text page (apps/views/text.py), run headless with AppTest on a tiny saved classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture
def page(open_page) -> AppTest:
    """The page on a runs folder that does not exist."""
    return open_page("text", timeout=60)


def test_empty_runs_folder_says_how_to_train(page: AppTest, tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    page.sidebar.text_input[0].set_value(str(tmp_path / "runs")).run()
    assert not page.exception
    assert any("make demo" in info.value and "tujie nlp train" in info.value for info in page.info)
    assert page.button[0].label == "Train the quick `nlp` demo models here"
    assert not page.metric  # stopped before loading anything


def test_classify_explain_and_batch(page: AppTest, tmp_path: Path, tiny_bert: Path) -> None:
    from tujie_nlp import TextClassifier

    TextClassifier.from_encoder(tiny_bert, ["neg", "pos"]).save_pretrained(tmp_path / "runs" / "x" / "model")
    page.sidebar.text_input[0].set_value(str(tmp_path / "runs")).run()
    assert not page.exception
    assert page.selectbox[0].options == ["x/model"]

    probs = page.dataframe[0].value["probability"]
    assert list(probs.index) == ["neg", "pos"]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert page.metric[0].value == probs.idxmax()
    assert any("| rank | word | score |" in md.value for md in page.markdown)  # the explanation table
    highlighted = [md.value for md in page.markdown if "tujie-attributions" in md.value]
    assert len(highlighted) == 1 and ">charged</span>" in highlighted[0]
    assert highlighted[0].count("<span title=") == len(page.text_area[0].value.split()) + 1  # words and the "."

    page.file_uploader[0].set_value(("note.txt", b"An awful, awful wait.", "text/plain")).run()
    assert not page.exception and "awful" in highlighted_text(page)
    page.file_uploader[0].set_value(("note.txt", b"\xff\xfe\x00bad", "text/plain")).run()
    assert any("note.txt: not UTF-8" in e.value for e in page.error)
    page.file_uploader[0].set_value(None).run()

    page.file_uploader[1].set_value(("reviews.csv", b"text,id\nwonderful film,1\n,2\nawful,3\n", "text/csv")).run()
    assert not page.exception
    batch = page.dataframe[1].value
    assert list(batch["text"]) == ["wonderful film", "awful"]
    assert set(batch["label"]) <= {"neg", "pos"}
    assert "line 3" in page.warning[0].value  # the empty text, skipped
    assert page.download_button

    page.main.text_input[0].set_value("body").run()  # the text column: not in the file
    assert not page.exception
    assert any("reviews.csv" in error.value and "body" in error.value for error in page.error)


def test_a_windowed_classifier_classifies_and_explains_a_long_text(
    page: AppTest, tmp_path: Path, tiny_bert: Path
) -> None:
    from tujie_nlp import TextClassifier

    windows = {"size": 16, "stride": 12, "max_windows": 8}
    TextClassifier.from_encoder(tiny_bert, ["neg", "pos"], windows=windows).save_pretrained(tmp_path / "runs" / "w")
    page.sidebar.text_input[0].set_value(str(tmp_path / "runs")).run()
    assert any("windows of 16 tokens every 12, mean pooling" in caption.value for caption in page.caption)
    page.text_area[0].set_value(" ".join(f"word{i}" for i in range(40)) + " finally wonderful").run()
    assert not page.exception
    assert page.metric[0].value in {"neg", "pos"}
    assert any("| rank | word | score |" in md.value for md in page.markdown)  # the explanation table


def highlighted_text(page: AppTest) -> str:
    (html,) = [md.value for md in page.markdown if "tujie-attributions" in md.value]
    return html
