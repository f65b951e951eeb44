"""The app as a whole (apps/streamlit_app.py) under AppTest: every page registered and running on an empty runs
folder, a page whose package is missing saying so, the Home page's demo results, the Training runs page, and a
page's button that trains its quick demo models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from tujie_ui import PAGES

from tujie_core import train_from_config
from tujie_core.demo import DemoResult, demo_results, record_result
from tujie_core.runs import parse_config

APP = Path(__file__).parents[2] / "apps" / "streamlit_app.py"
DOMAIN_PAGES = [spec for spec in PAGES if spec.package is not None]
pytestmark = pytest.mark.filterwarnings(  # from Opacus, in the privacy demo a button trains
    "ignore:Full backward hook is firing:UserWarning", "ignore:Optimal order is the largest alpha:UserWarning"
)


def test_the_app_opens_on_home_with_every_page_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUJIE_RUNS_DIR", str(tmp_path / "runs"))
    app = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "tujie 图解"
    listed = app.dataframe[0].value
    assert list(listed["page"]) == [spec.title for spec in PAGES[1:]]
    assert set(listed["installed"]) == {"yes"}
    assert "No demo results" in app.info[0].value
    assert app.sidebar.text_input[0].value == str(tmp_path / "runs")


@pytest.mark.parametrize("spec", PAGES, ids=[spec.url_path for spec in PAGES])
def test_every_page_runs_on_an_empty_runs_folder(spec, open_page) -> None:
    page = open_page(spec.url_path, timeout=180)
    assert not page.exception, [e.value for e in page.exception]
    assert page.title[0].value == ("tujie 图解" if spec.file == "home.py" else spec.title)
    if spec.demo_part is not None:  # nothing trained yet: the page says how, and offers to train its demo models
        assert any(f"`{spec.demo_part}` demo" in button.label for button in page.button)


@pytest.mark.parametrize("spec", DOMAIN_PAGES, ids=[spec.url_path for spec in DOMAIN_PAGES])
def test_a_page_whose_package_is_missing_says_so(spec, open_page, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == spec.package or m.startswith(f"{spec.package}.")] + [spec.package]:
        monkeypatch.setitem(sys.modules, name, None)  # `import tujie_x…` now raises ImportError
    page = open_page(spec.url_path)
    assert not page.exception
    assert f"{spec.distribution} is not installed" in page.error[0].value
    assert f"pip install {spec.distribution}" in page.error[0].value


def test_home_lists_a_missing_package(open_page, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tujie_driving", None)
    page = open_page("home")
    installed = dict(zip(page.dataframe[0].value["page"], page.dataframe[0].value["installed"], strict=True))
    assert installed["Driving"] == "no" and installed["Vision"] == "yes"
    assert "pip install tujie-driving" in page.warning[0].value


def test_home_shows_the_latest_demo_results(tmp_path: Path, open_page) -> None:
    demo = tmp_path / "runs" / "demo"
    record_result(demo, "core", DemoResult("core: digits MLP", {"test/accuracy": 0.9712}, demo / "a"), 3.2, False)
    record_result(demo, "nlp", DemoResult("nlp: tickets", {"test/f1_macro": 0.5}, demo / "b"), 20.0, True)
    page = open_page("home", tmp_path / "runs")
    assert not page.exception
    parts, metrics = page.dataframe[1].value, page.dataframe[2].value
    assert list(parts["part"]) == ["core: digits MLP", "nlp: tickets"]
    assert list(parts["mode"]) == ["full", "quick"] and list(parts["run folder"]) == ["demo/a", "demo/b"]
    assert metrics.to_dict("records") == [
        {"part": "core: digits MLP", "metric": "test/accuracy", "value": 0.9712},
        {"part": "nlp: tickets", "metric": "test/f1_macro", "value": 0.5},
    ]
    (demo / "demo.json").write_text("{broken")
    page = open_page("home", tmp_path / "runs")
    assert not page.exception and "not a demo results file" in page.error[0].value


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for name, hidden in (("small", [8]), ("wide", [32])):
        raw = {
            "name": name,
            "output_dir": str(root),
            "data": {"name": "breast_cancer", "batch_size": 64},
            "model": {"name": "mlp", "hidden": hidden},
            "trainer": {"max_epochs": 3, "progress": "none"},
        }
        train_from_config(parse_config(raw))
    return root


def test_training_runs_page_browses_a_run(two_runs: Path, open_page) -> None:
    page = open_page("runs", two_runs)
    assert not page.exception
    newest = page.selectbox[0].value
    assert newest.startswith("wide/") and len(page.selectbox[0].options) == 2
    summary = json.loads((two_runs / newest / "summary.json").read_text())
    shown = page.dataframe[0].value["value"]
    assert shown["test/accuracy"] == pytest.approx(summary["metrics"]["test/accuracy"])
    assert page.multiselect[0].value == ["train/loss", "val/loss"]  # the loss curves by default
    assert len(page.get("arrow_vega_lite_chart") or page.get("vega_lite_chart")) >= 1  # the curves
    plots = sorted((two_runs / newest / "plots").glob("*.png"))
    assert len(plots) >= 3 and len(page.image) >= len(plots)  # the report's plots, drawn in place
    assert any("# Run report: wide" in md.value for md in page.markdown)
    assert "name: wide" in page.code[0].value


def test_training_runs_page_compares_two_runs(two_runs: Path, open_page) -> None:
    page = open_page("runs", two_runs)
    a, b = page.selectbox[1].value, page.selectbox[2].value
    assert a != b
    table = page.dataframe[1].value
    metrics = [json.loads((two_runs / run / "summary.json").read_text())["metrics"] for run in (a, b)]
    row = table.loc["test/accuracy"]
    assert row["A"] == pytest.approx(metrics[0]["test/accuracy"]) and row["B"] == pytest.approx(
        metrics[1]["test/accuracy"]
    )
    assert row["B − A"] == pytest.approx(row["B"] - row["A"])
    page.selectbox[2].set_value(a).run()  # the same run twice: no difference anywhere
    assert not page.exception and (page.dataframe[1].value["B − A"] == 0).all()


def test_a_page_button_trains_its_quick_demo_models(tmp_path: Path, open_page) -> None:
    page = open_page("privacy", tmp_path / "runs", timeout=300)
    (button,) = [b for b in page.button if "`privacy` demo" in b.label]
    button.click().run()
    assert not page.exception, [e.value for e in page.exception]
    table = page.dataframe[0].value  # accuracy against ε over the runs just trained
    assert table["epsilon"].min() <= 3.0 and len(table) >= 2
    assert "privacy" in demo_results(tmp_path / "runs" / "demo")


def test_reports_draw_their_own_images_and_nothing_outside_the_run(tmp_path: Path) -> None:
    from PIL import Image

    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(run / "plots" / "roc.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    report = "# Report\n\n![ROC](plots/roc.png)\n\nafter\n\n![leak](../secret.png) ![gone](plots/none.png)\n"

    def page(report: str, folder: str) -> None:
        from pathlib import Path

        from tujie_ui import show_markdown

        show_markdown(report, Path(folder))

    app = AppTest.from_function(page, args=(report, str(run))).run()
    assert not app.exception
    assert len(app.image) == 1 and app.image[0].proto.imgs[0].caption == "ROC"
    texts = [md.value for md in app.markdown]
    assert texts[0].strip() == "# Report" and "after" in texts[1]
    assert "![leak](../secret.png)" in texts[1] and "![gone](plots/none.png)" in texts[1]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("big.csv", b"x" * (2 * 2**20 + 1), "big.csv: 2.0 MB is over this page's 2 MB limit"),
        ("empty.csv", b"", "empty.csv: the file is empty"),
        ("table.xlsx", b"PK..", "table.xlsx: not a .csv / .tsv file"),
    ],
)
def test_uploads_are_checked_with_a_message_naming_the_file(name: str, data: bytes, message: str) -> None:
    def page(name: str, data: bytes) -> None:
        from types import SimpleNamespace

        import streamlit as st
        from tujie_ui import upload_bytes

        upload = SimpleNamespace(name=name, size=len(data), getvalue=lambda: data)
        st.write(repr(upload_bytes(upload, 2, (".csv", ".tsv"))))

    app = AppTest.from_function(page, args=(name, data)).run()
    assert not app.exception
    assert app.error[0].value == message and app.markdown[0].value == "None"


def test_a_good_upload_comes_back_whole() -> None:
    def page() -> None:
        from types import SimpleNamespace

        import streamlit as st
        from tujie_ui import upload_bytes

        upload = SimpleNamespace(name="Data.CSV", size=4, getvalue=lambda: b"a,b\n")
        st.write(repr(upload_bytes(upload, 2, (".csv",))))

    app = AppTest.from_function(page).run()
    assert not app.error and app.markdown[0].value == repr(b"a,b\n")
