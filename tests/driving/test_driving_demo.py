"""The driving part of ``tujie demo`` (quick): Q-learning against the baselines, a GRU against constant velocity."""

from __future__ import annotations

from pathlib import Path

from tujie_driving.demo import driving_demo


def test_quick_driving_demo(tmp_path: Path) -> None:
    result = driving_demo(tmp_path, quick=True)
    m = result.metrics
    assert {"qlearning return", "idm return", "random return", "idm crash rate"} <= set(m)
    assert m["idm crash rate"] == 0.0 and m["idm return"] > m["random return"]
    assert m["GRU trajectory ADE 3 s (m)"] > 0 and m["constant velocity ADE 3 s (m)"] > 0
    assert (result.run_dir / "report.md").is_file() and (result.run_dir / "agent" / "qtable.npz").is_file()
