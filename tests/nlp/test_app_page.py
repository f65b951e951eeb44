"""The NLP Streamlit page (apps/pages/1_NLP.py), run headless with AppTest on a tiny saved classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = Path(__file__).parents[2] / "apps" / "pages" / "1_NLP.py"


@pytest.fixture
def page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The page, started in an empty working folder: its default runs folder `runs` does not exist there."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return AppTest.from_file(str(PAGE), default_timeout=60).run()


def test_empty_runs_folder_says_how_to_train(page: AppTest, tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    page.sidebar.text_input[0].set_value(str(tmp_path / "runs")).run()
    assert not page.exception
    assert any("make demo" in info.value for info in page.info)
    assert not page.metric  # stopped before loading anything


def test_classify_explain_and_batch(page: AppTest, tmp_path: Path, tiny_bert: Path) -> None:
    from tujie_nlp import TextClassifier

    TextClassifier.from_encoder(tiny_bert, ["neg", "pos"]).save_pretrained(tmp_path / "runs" / "x" / "model")
    page.sidebar.text_input[0].set_value(str(tmp_path / "runs")).run()
    assert not page.exception
    assert page.sidebar.selectbox[0].options == ["x/model"]

    probs = page.dataframe[0].value["probability"]
    assert list(probs.index) == ["neg", "pos"]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert page.metric[0].value == probs.idxmax()
    assert any("| rank | word | score |" in md.value for md in page.markdown)  # the explanation table

    page.file_uploader[0].set_value(("reviews.csv", b"text,id\nwonderful film,1\n,2\nawful,3\n", "text/csv")).run()
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
