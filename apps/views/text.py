"""Text: classify typed or uploaded text with a fine-tuned encoder (tujie_nlp), its token attributions highlighted,
and classify a whole file of texts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st
from tujie_ui import missing_package, offer_demo, page_spec, relative, runs_root, upload_bytes

from tujie_core import TujieError

try:
    from tujie_nlp.classifier import METADATA_NAME, TextClassifier
    from tujie_nlp.explain import Explanation, explain, explanation_html, explanation_markdown
    from tujie_nlp.run import predict_file
except ImportError as exc:
    missing_package("tujie-nlp", exc)

SPEC = page_spec("text.py")
EXAMPLE = "I was charged twice this month and nobody answers my emails."
METHODS = {"integrated gradients": "ig", "attention rollout": "rollout"}
MAX_DOCUMENT_MB = 2
MAX_BATCH_MB = 50
BATCH_TYPES = (".csv", ".tsv", ".jsonl")


@st.cache_resource(show_spinner="Loading the classifier…")
def load(folder: str) -> TextClassifier:
    return TextClassifier.from_pretrained(folder)


@st.cache_data(show_spinner="Explaining…", max_entries=64)
def explanation(folder: str, text: str, method: str) -> Explanation:
    return explain(load(folder), text, method)


def uploaded_document(upload) -> str | None:
    """A .txt upload as text, or None after a message (wrong type, too large, empty, not UTF-8)."""
    data = upload_bytes(upload, MAX_DOCUMENT_MB, (".txt",))
    if data is None:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        st.error(f"{upload.name}: not UTF-8 text (byte {exc.start})")
        return None
    if not text.strip():
        st.error(f"{upload.name}: no text in the file")
        return None
    return text


st.title("Text")
st.caption(f"Book ch. {SPEC.chapters}.")
root = runs_root()
found = sorted((p.parent for p in root.glob(f"**/{METADATA_NAME}")), reverse=True) if root.is_dir() else []
if not found:
    offer_demo(SPEC.demo_part, "text classifier", "tujie nlp train")
    st.stop()
folder = st.selectbox("classifier", found, format_func=lambda p: relative(p, root))
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

st.header("Classify")
document = st.file_uploader("a .txt document", type=["txt"], key="document", max_upload_size=MAX_DOCUMENT_MB)
text = uploaded_document(document) if document is not None else None
if text is None:
    text = st.text_area("or type a text", EXAMPLE)
if text and text.strip():
    probs = pd.Series(clf.predict_proba([text])[0].tolist(), index=names, name="probability")
    predicted = (", ".join(probs.index[probs > 0.5]) or "none above 0.5") if multi else probs.idxmax()
    st.metric("multi-label prediction (p > 0.5)" if multi else "prediction", predicted)
    chart, table = st.columns(2)
    chart.bar_chart(probs, horizontal=True)
    table.dataframe(probs.to_frame())

    st.header("Explain")
    method = st.radio("method", list(METHODS), horizontal=True)
    result = explanation(str(folder), text, METHODS[method])
    st.markdown(explanation_html(result), unsafe_allow_html=True)
    st.caption("green: words that raised the explained label, red: words against it; hover a word for its score.")
    st.markdown(explanation_markdown(result))
else:
    st.info("Type a text above (or upload one) to classify and explain it.")

st.header("Batch")
upload = st.file_uploader(
    "a file to classify, one text per row", type=["csv", "tsv", "jsonl"], max_upload_size=MAX_BATCH_MB
)
column = st.text_input("text column", "text")
if upload is not None and (data := upload_bytes(upload, MAX_BATCH_MB, BATCH_TYPES)) is not None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "upload" + Path(upload.name).suffix.lower())
        source.write_bytes(data)
        try:
            summary = predict_file(clf, source, Path(tmp, "predictions.csv"), text_column=column)
        except TujieError as exc:
            st.error(str(exc).replace(str(source), upload.name))
            st.stop()
        frame = pd.read_csv(summary.output, keep_default_na=False)
        output = summary.output.read_bytes()
    st.caption(f"{summary.predicted:,} rows predicted; the first 20:")
    st.dataframe(frame.head(20), hide_index=True)
    name = f"{Path(upload.name).stem}-predictions.csv"
    st.download_button("download predictions (CSV)", output, file_name=name, mime="text/csv", on_click="ignore")
    if summary.rejected:
        shown = "\n".join(f"- {row}" for row in summary.examples)
        st.warning(f"{summary.rejected} rows skipped:\n{shown}")
