"""The app's Privacy page (apps/views/privacy.py), run headless with AppTest on real run folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tujie_core import train_from_config
from tujie_core.runs import parse_config

pytestmark = pytest.mark.filterwarnings(
    "ignore:Full backward hook is firing:UserWarning", "ignore:Optimal order is the largest alpha:UserWarning"
)


def train(root: Path, name: str, plugins: list) -> Path:
    raw = {
        "name": name,
        "output_dir": str(root),
        "data": {"name": "breast_cancer", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [8]},
        "trainer": {"max_epochs": 2, "progress": "none"},
        "plugins": plugins,
    }
    return train_from_config(parse_config(raw)).run_dir


@pytest.fixture
def page(open_page) -> AppTest:
    return open_page("privacy", timeout=120)


def test_empty_folder_says_how_to_train_a_private_run(page: AppTest) -> None:
    assert not page.exception
    assert any("--dp epsilon=3" in info.value for info in page.info)


def test_runs_audit_report_card_and_scan(page: AppTest, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    private = train(root, "private", [{"name": "dp", "epsilon": 2.0}])
    train(root, "plain", [])
    page.sidebar.text_input[0].set_value(str(root)).run()
    assert not page.exception
    table = page.dataframe[0].value
    assert len(table) == 2 and (table["epsilon"] <= 2.0).sum() == 1  # the non-private run shows ε = ∞
    assert "ε (spent) at δ" in page.expander[0].markdown[0].value  # the first DP run is selected

    page.number_input[0].set_value(0).run()
    page.button[0].click().run()
    assert not page.exception
    assert (private / "audit" / "roc.png").is_file()
    assert any("| loss_threshold |" in md.value for md in page.markdown)

    csv = b"id,contact\n1,ann@example.org\n2,no contact\n"
    page.file_uploader[0].set_value(("people.csv", csv, "text/csv")).run()
    assert not page.exception
    assert "identifiers found" in page.warning[0].value
    assert any("| contact | email | 1 | 2 |" in md.value for md in page.markdown)
    assert page.download_button

    page.file_uploader[0].set_value(("notes.jsonl", b"[1]\n", "application/json")).run()
    assert any("notes.jsonl:1: expected a JSON object" in error.value for error in page.error)


def test_encrypted_round_trip_shows_what_the_server_sees_and_the_client_gets(page: AppTest, tmp_path: Path) -> None:
    assert page.selectbox[-1].value.startswith("built in: digits MLP")  # works with no runs at all
    page.slider[0].set_value(5).run()
    page.button[-1].click().run()
    assert not page.exception and not page.error
    table = page.dataframe[-1].value
    assert len(table) == 5 and list(table.columns) == ["true", "encrypted prediction", "plaintext prediction"]
    assert (table["encrypted prediction"] == table["plaintext prediction"]).all()
    assert page.metric[0].value == "100%"
    seen = " ".join(md.value for md in page.markdown)
    assert "no secret key" in seen and "64 ciphertexts" in seen and "128-bit security" in seen

    raw = {
        "name": "batch-norm",
        "output_dir": str(tmp_path / "runs"),
        "data": {"name": "breast_cancer", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [8], "batch_norm": True},
        "trainer": {"max_epochs": 1, "progress": "none"},
    }
    run_dir = train_from_config(parse_config(raw)).run_dir
    page.sidebar.text_input[0].set_value(str(tmp_path / "runs")).run()
    page.selectbox[-1].set_value(str(run_dir)).run()
    page.button[-1].click().run()
    assert not page.exception  # refused with the layer named, not a stack trace
    assert "layer 2 (BatchNorm1d) has no plain form" in page.error[0].value
