"""The privacy part of ``tujie demo`` (quick): a DP run and its non-private baseline, audited, with a report card."""

from __future__ import annotations

from pathlib import Path

import pytest

from tujie_privacy.demo import privacy_demo


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_quick_demo_trains_audits_and_writes_the_report_card(tmp_path: Path) -> None:
    result = privacy_demo(tmp_path, quick=True)
    m = result.metrics
    assert 0 < m["ε spent (δ = 1e-5)"] <= 3.0
    assert m["non-DP test/accuracy"] > 0.9 and 0.5 < m["DP test/accuracy"] <= m["non-DP test/accuracy"]
    assert 0 <= m["DP loss-attack AUC"] <= 1
    assert m["HE agreement with plaintext"] == 1.0 and m["HE max |logit error|"] < 1e-3
    assert m["HE test/accuracy (encrypted)"] > 0.8 and 0 < m["HE public context (MB)"] < 32
    card = (result.run_dir / "privacy.md").read_text()
    assert "| test/accuracy |" in card and "non-private baseline" in card
