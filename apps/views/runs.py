"""Training runs: browse the run folders under the runs folder (metrics, curves, report with its plots, config)
and compare two runs metric by metric and curve by curve."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st
from tujie_ui import finished_runs, relative, runs_root, show_markdown


@st.cache_data(max_entries=64)
def summary(run: str, modified: float) -> dict:
    return json.loads(Path(run, "summary.json").read_text(encoding="utf-8"))


@st.cache_data(max_entries=64)
def history(run: str, modified: float) -> pd.DataFrame:
    """The run's per-epoch metrics (``metrics.jsonl``), indexed by epoch (or step); empty if it has none."""
    path = Path(run, "metrics.jsonl")
    if not path.is_file():
        return pd.DataFrame()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame(lines)
    axis = "epoch" if "epoch" in frame else "step"
    return frame.set_index(axis).drop(columns="step", errors="ignore")


def load(run: Path) -> tuple[dict, pd.DataFrame]:
    stamp = (run / "summary.json").stat().st_mtime
    return summary(str(run), stamp), history(str(run), stamp)


def numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


st.title("Training runs")
root = runs_root()
runs = finished_runs(root)
if not runs:
    st.info(f"No finished runs (folders with `summary.json`) under `{root}`. Run `make demo` or `tujie train CONFIG`.")
    st.stop()
names = [relative(run, root) for run in runs]
kinds = {name: load(run)[0].get("kind", "supervised") for name, run in zip(names, runs, strict=True)}
st.caption(f"{len(runs)} finished runs under `{root}`, newest first.")

st.header("A run")
name = st.selectbox("run", names, format_func=lambda n: f"{n} ({kinds[n]})")
run = root / name
info, curves = load(run)
metrics_tab, curves_tab, report_tab, config_tab = st.tabs(["metrics", "curves", "report", "config"])
with metrics_tab:
    values = numbers(info.get("metrics", {}))
    if values:
        st.dataframe(pd.Series(values, name="value").to_frame(), width="stretch")
    extra = {k: v for k, v in info.items() if k not in ("metrics", "kind") and not isinstance(v, dict | list)}
    if extra:
        st.caption(", ".join(f"{k}: {v}" for k, v in extra.items()))
with curves_tab:
    if curves.empty:
        st.info("This run kept no per-epoch metrics (`metrics.jsonl`); its plots are in the report.")
    else:
        columns = list(curves.columns)
        default = [c for c in columns if c.endswith("/loss")] or columns[:1]
        chosen = st.multiselect("metrics", columns, default=default)
        if chosen:
            st.line_chart(curves[chosen])
with report_tab:
    report = run / "report.md"
    if report.is_file():
        show_markdown(report.read_text(encoding="utf-8"), run)
    else:
        st.info("This run has no report.md.")
with config_tab:
    config = run / "config.yaml"
    st.code(config.read_text(encoding="utf-8") if config.is_file() else "(no config.yaml)", language="yaml")

st.header("Compare two runs")
if len(runs) < 2:
    st.info("Compare needs two finished runs.")
    st.stop()
left, right = st.columns(2)
first = left.selectbox("run A", names, index=0, key="compare_a")
alike = [i for i, n in enumerate(names) if n != first and kinds[n] == kinds[first]]  # by default a run of A's kind
second = right.selectbox("run B", names, index=alike[0] if alike else int(first == names[0]), key="compare_b")
(a, curves_a), (b, curves_b) = load(root / first), load(root / second)
ma, mb = numbers(a.get("metrics", {})), numbers(b.get("metrics", {}))
shared = [k for k in ma if k in mb]
if not shared:
    st.warning(f"{first} and {second} report no metric in common ({kinds[first]} against {kinds[second]}).")
else:
    table = pd.DataFrame({"A": [ma[k] for k in shared], "B": [mb[k] for k in shared]}, index=shared)
    table["B − A"] = table["B"] - table["A"]
    st.dataframe(table, width="stretch")
common = [c for c in curves_a.columns if c in curves_b.columns]
if common:
    metric = st.selectbox("curve", common, index=common.index(next((c for c in common if c == "val/loss"), common[0])))
    overlay = pd.concat({f"A: {first}": curves_a[metric], f"B: {second}": curves_b[metric]}, axis=1)
    st.line_chart(overlay)
