"""Home: what tujie is, the book chapter behind each page, and the latest `tujie demo` results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from tujie_ui import PAGES, relative, runs_root

from tujie_core import TujieError
from tujie_core.demo import demo_results

st.title("tujie 图解")
st.markdown(
    "**tujie** turns the book 《图解大模型》 (*Illustrated Large Models*) into working software: a core that trains, "
    "evaluates, tunes and compresses any model, and one package per domain — text, vision, driving, healthcare and "
    "privacy. Everything here runs on this machine, offline, on the data and weights that ship with the packages "
    "or on your own files."
)

st.header("Pages")
rows = [
    {
        "page": spec.title,
        "book chapters": spec.chapters,
        "package": spec.distribution or "tujie-core",
        "installed": "yes" if spec.installed else "no",
        "what it shows": spec.shows,
    }
    for spec in PAGES
    if spec.file != "home.py"
]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
for spec in PAGES[1:]:
    if not spec.installed:
        st.warning(f"{spec.title}: `{spec.distribution}` is not installed (`pip install {spec.distribution}`).")

st.header("Latest `tujie demo` results")
folder = runs_root() / "demo"
try:
    results = demo_results(folder)
except TujieError as exc:
    st.error(str(exc))
    results = {}
if not results:
    st.info(
        f"No demo results in `{folder}`. Run `make demo` (every domain, about 10 minutes on 2 cores; "
        "`tujie demo --quick` takes about 2), then reload this page."
    )
else:
    metrics = [
        {"part": entry["name"], "metric": name, "value": round(float(value), 4)}
        for entry in results.values()
        for name, value in entry["metrics"].items()
    ]
    parts = [
        {
            "part": entry["name"],
            "finished (UTC)": entry["finished"].replace("T", " ").removesuffix("+00:00"),
            "mode": "quick" if entry["quick"] else "full",
            "wall time (s)": entry["seconds"],
            "run folder": relative(Path(entry["run_dir"]), runs_root()),
        }
        for entry in results.values()
    ]
    st.dataframe(pd.DataFrame(parts), hide_index=True, width="stretch")
    st.dataframe(pd.DataFrame(metrics), hide_index=True, width="stretch", height=min(800, 36 + 35 * len(metrics)))
    st.caption(f"from `{folder / 'demo.json'}`; each part's run folder opens in **Training runs**.")
