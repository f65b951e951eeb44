"""tujie Streamlit app, home page: browse run folders written by `tujie train` / `tujie demo`.

Start with `make app`. Domain pages are added under apps/pages/ by their issues.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

st.set_page_config(page_title="tujie", layout="wide")
st.title("tujie 图解 — runs")
root = Path(st.sidebar.text_input("runs folder", "runs"))
runs = sorted((p.parent for p in root.glob("**/summary.json")), reverse=True)
if not runs:
    st.info(f"No finished runs under `{root}`. Run `make demo` or `tujie train CONFIG.yaml` first.")
    st.stop()
run = st.sidebar.selectbox("run", runs, format_func=lambda p: str(p.relative_to(root)))
summary = json.loads((run / "summary.json").read_text())
st.subheader(str(run.relative_to(root)))
st.dataframe(pd.Series(summary["metrics"], name="value").to_frame(), use_container_width=True)
history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
if history:
    frame = pd.DataFrame(history).set_index("epoch")
    st.line_chart(frame[[c for c in frame.columns if c.endswith("/loss")]])
for png in sorted((run / "plots").glob("*.png")):
    st.image(str(png), caption=png.stem.replace("_", " "))
