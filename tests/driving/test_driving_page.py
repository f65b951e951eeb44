"""The app's Driving page (apps/views/driving.py), run headless with AppTest on a real run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tujie_core import train_from_config
from tujie_core.runs import parse_config

TIMEOUT = 180


def test_without_runs_a_baseline_drives_and_the_page_says_how_to_train(tmp_path: Path, open_page) -> None:
    page = open_page("driving", timeout=TIMEOUT)
    assert not page.exception
    assert "tujie driving train" in " ".join(i.value for i in page.info)
    assert "idm in highway-fast" in page.image[0].proto.imgs[0].caption
    labels = {m.label: m.value for m in page.metric}
    assert labels["crashed"] in ("True", "False") and float(labels["return"]) > 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("driving-runs")
    raw = {
        "kind": "driving",
        "name": "ens",
        "output_dir": str(root),
        "scenario": {"name": "highway-fast", "config": {"duration": 8}},
        "agent": {"name": "dqn-ensemble", "members": 2, "learning_starts": 20, "threshold": 0.0},
        "steps": 60,
        "evaluation": {"every": 60, "episodes": 1, "test_episodes": 2, "render": False},
        "baselines": ["idm"],
        "progress": False,
    }
    train_from_config(parse_config(raw))
    return root


def test_with_a_run_the_page_shows_the_comparison_and_the_uncertainty_trace(runs: Path, open_page) -> None:
    page = open_page("driving", runs, timeout=TIMEOUT)
    assert not page.exception
    assert page.selectbox[0].value.startswith("ens/")
    table = page.dataframe[0].value
    assert set(table.index) == {"dqn-ensemble", "idm"} and "crash_rate" in table.columns
    assert len(page.get("vega_lite_chart")) == 1  # the uncertainty trace
    labels = {m.label: m.value for m in page.metric}
    assert int(labels["fallbacks"]) > 0  # threshold 0: every disagreement hands over to IDM
    page.selectbox[1].set_value("merge").run()
    assert not page.exception and "in merge" in page.image[0].proto.imgs[0].caption
