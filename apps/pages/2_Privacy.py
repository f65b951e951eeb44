"""tujie Streamlit app, privacy page: accuracy against ε over the runs in a folder, a run's membership-inference
audit (ROC) and its report card, and an identifier scan of an uploaded file (tujie_privacy)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from tujie_core import TujieError

try:
    from tujie_privacy.audit import AUDIT_DIR, audit_run
    from tujie_privacy.dp import DP_FILE
    from tujie_privacy.report import privacy_report
    from tujie_privacy.scan import scan_file
except ImportError:  # the page of a package that is not installed says so
    st.error("tujie-privacy is not installed: `pip install tujie-privacy` (or `make setup`).")
    st.stop()

MAX_UPLOAD_MB = 20


def runs_under(root: Path) -> list[dict]:
    """Every finished run folder under ``root``: its ε (None without DP) and test (else validation) accuracy."""
    rows = []
    for summary_file in sorted(root.glob("**/summary.json")):
        run = summary_file.parent
        metrics = json.loads(summary_file.read_text(encoding="utf-8")).get("metrics", {})
        accuracy = metrics.get("test/accuracy", metrics.get("val/accuracy"))
        if accuracy is None:
            continue
        dp_file = run / DP_FILE
        epsilon = json.loads(dp_file.read_text(encoding="utf-8"))["epsilon"] if dp_file.is_file() else None
        rows.append({"run": str(run.relative_to(root)), "epsilon": epsilon, "accuracy": accuracy, "path": run})
    return rows


st.set_page_config(page_title="tujie — privacy", layout="wide")
st.title("tujie 图解 — privacy (book ch. 19)")
root = Path(st.sidebar.text_input("runs folder", "runs"))
runs = runs_under(root) if root.is_dir() else []
private = [r for r in runs if r["epsilon"] is not None]

st.header("Accuracy against ε")
if not private:
    st.info(
        f"No DP runs under `{root}`. Run `make demo`, or train one: `tujie train CONFIG --dp epsilon=3` "
        "(any run config)."
    )
else:
    table = pd.DataFrame([{k: r[k] for k in ("run", "epsilon", "accuracy")} for r in runs])
    st.scatter_chart(table[table["epsilon"].notna()], x="epsilon", y="accuracy")
    best_plain = table[table["epsilon"].isna()]["accuracy"].max()
    if pd.notna(best_plain):
        st.caption(f"best non-private run under this folder: accuracy {best_plain:.4f}")
    st.dataframe(table.fillna({"epsilon": float("inf")}), hide_index=True)

st.header("Audit and report card of a run")
if runs:
    first = runs.index(private[0]) if private else 0
    chosen = st.selectbox("run", runs, index=first, format_func=lambda r: f"{r['run']} (ε = {r['epsilon'] or '∞'})")
    run_dir: Path = chosen["path"]
    roc = run_dir / AUDIT_DIR / "roc.png"
    references = st.number_input("reference models (LiRA)", 0, 16, 2)
    if st.button("run the membership-inference audit"):
        with st.status("Training reference models and attacking…", expanded=False):
            try:
                audit_run(run_dir, references=int(references), canaries=0)
            except TujieError as exc:
                st.error(str(exc))
    if roc.is_file():
        left, right = st.columns(2)
        left.image(str(roc), caption="ROC of the attacks, log scale")
        right.markdown((run_dir / AUDIT_DIR / "audit.md").read_text(encoding="utf-8"))
    else:
        st.info("Not audited yet: press the button above (or `tujie privacy audit RUN_DIR`).")
    try:
        card, _ = privacy_report(run_dir)
    except TujieError as exc:
        st.error(str(exc))
    else:
        with st.expander("privacy report card", expanded=True):
            st.markdown(card.read_text(encoding="utf-8"))
else:
    st.info("No finished run folders to audit.")

st.header("Scan data for direct identifiers")
upload = st.file_uploader("a CSV, TSV, JSON-lines or text file", type=["csv", "tsv", "jsonl", "txt"])
if upload is not None:
    if upload.size > MAX_UPLOAD_MB * 2**20:
        st.error(f"{upload.name}: larger than {MAX_UPLOAD_MB} MB; scan it with `tujie privacy scan FILE`.")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp, "upload" + Path(upload.name).suffix.lower())
            source.write_bytes(upload.getvalue())
            try:
                report = scan_file(source, redact_to=Path(tmp, "redacted" + source.suffix))
            except TujieError as exc:
                st.error(str(exc).replace(str(source), upload.name))
            else:
                if report.clean:
                    st.success(f"{upload.name}: no direct identifiers in {report.rows:,} rows.")
                else:
                    st.warning(f"{upload.name}: identifiers found, review before training.")
                st.markdown(report.markdown())
                redacted = Path(tmp, "redacted" + source.suffix).read_bytes()
                st.download_button("redacted copy", redacted, file_name=f"redacted-{upload.name}")
