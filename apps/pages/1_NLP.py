"""tujie Streamlit app, NLP page: classify, explain and batch-predict with a saved text classifier (tujie_nlp)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from tujie_core import TujieError
from tujie_nlp.classifier import METADATA_NAME, TextClassifier
from tujie_nlp.explain import Explanation, explain, explanation_markdown, plot_explanation
from tujie_nlp.run import predict_file

EXAMPLE = "I was charged twice this month and nobody answers my emails."
METHODS = {"integrated gradients": "ig", "attention rollout": "rollout"}


@st.cache_resource(show_spinner="Loading the classifier…")
def load(folder: str) -> TextClassifier:
    return TextClassifier.from_pretrained(folder)


@st.cache_data(show_spinner="Explaining…", max_entries=64)
def explanation(folder: str, text: str, method: str) -> Explanation:
    return explain(load(folder), text, method)


st.set_page_config(page_title="tujie — NLP", layout="wide")
st.title("tujie 图解 — text classifiers")
root = Path(st.sidebar.text_input("runs folder", "runs"))
found = sorted((p.parent for p in root.glob(f"**/{METADATA_NAME}")), reverse=True)
chosen = st.sidebar.selectbox("classifier", found, format_func=lambda p: str(p.relative_to(root))) if found else None
typed = st.sidebar.text_input("or any classifier folder", help="overrides the selection above").strip()
folder = Path(typed) if typed else chosen
if folder is None:
    st.info(
        f"No classifier folders (with `{METADATA_NAME}`) under `{root}`. "
        "Run `make demo` or `tujie nlp train` first, or type a classifier folder in the sidebar."
    )
    st.stop()
try:
    clf = load(str(folder))
except TujieError as exc:
    st.error(str(exc))
    st.stop()
names, multi = clf.labels.names, clf.labels.multi_label
kind = "multi-label" if multi else "single-label"
w = clf.windows
reads = f"windows of {w.size} tokens every {w.stride}, {w.pool} pooling" if w else f"first {clf.max_length} tokens"
if w is None and clf.truncation != "head":
    reads = f"{clf.max_length} tokens ({clf.truncation})"
st.caption(f"`{folder}`: {kind} over {len(names)} labels, encoder `{clf.encoder}`, reads {reads}")

text = st.text_area("text", EXAMPLE)
if text.strip():
    st.header("Classify")
    probs = pd.Series(clf.predict_proba([text])[0].tolist(), index=names, name="probability")
    predicted = (", ".join(probs.index[probs > 0.5]) or "none above 0.5") if multi else probs.idxmax()
    st.metric("multi-label prediction (p > 0.5)" if multi else "prediction", predicted)
    chart, table = st.columns(2)
    chart.bar_chart(probs, horizontal=True)
    table.dataframe(probs.to_frame())

    st.header("Explain")
    method = st.radio("method", list(METHODS), horizontal=True)
    result = explanation(str(folder), text, METHODS[method])
    st.pyplot(plot_explanation(result))
    st.markdown(explanation_markdown(result))
else:
    st.info("Type a text above to classify and explain it.")

st.header("Batch")
upload = st.file_uploader("file to classify (one text per row)", type=["csv", "tsv", "jsonl"])
column = st.text_input("text column", "text")
if upload is not None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "upload" + Path(upload.name).suffix.lower())
        source.write_bytes(upload.getvalue())
        try:
            summary = predict_file(clf, source, Path(tmp, "predictions.csv"), text_column=column)
        except TujieError as exc:
            st.error(str(exc).replace(str(source), upload.name))
            st.stop()
        frame = pd.read_csv(summary.output, keep_default_na=False)
        data = summary.output.read_bytes()
    st.caption(f"{summary.predicted:,} rows predicted; the first 20:")
    st.dataframe(frame.head(20), hide_index=True)
    name = f"{Path(upload.name).stem}-predictions.csv"
    st.download_button("download predictions (CSV)", data, file_name=name, mime="text/csv", on_click="ignore")
    if summary.rejected:
        shown = "\n".join(f"- {row}" for row in summary.examples)
        st.warning(f"{summary.rejected} rows skipped:\n{shown}")
