"""Privacy: accuracy against ε over the runs in a folder, a run's membership-inference
audit (ROC) and its report card, an identifier scan of an uploaded file, and an encrypted-inference round trip
showing what the server sees against what the client gets (tujie_privacy)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from tujie_ui import (
    finished_runs,
    missing_package,
    offer_demo,
    page_spec,
    relative,
    runs_root,
    show_markdown,
    upload_bytes,
)

from tujie_core import TujieError

try:
    from tujie_privacy.audit import AUDIT_DIR, audit_run
    from tujie_privacy.dp import DP_FILE
    from tujie_privacy.he import BackgroundServer, HEModel, ServiceClient, compile_run
    from tujie_privacy.report import privacy_report
    from tujie_privacy.scan import scan_file
except ImportError as exc:
    missing_package("tujie-privacy", exc)

SPEC = page_spec("privacy.py")
MAX_UPLOAD_MB = 20
BUILT_IN = "built in: digits MLP with square activations (trained on first use, ~5 s)"


def runs_under(root: Path) -> list[dict]:
    """Every finished run folder under ``root``: its ε (None without DP) and test (else validation) accuracy."""
    rows = []
    for run in finished_runs(root):
        metrics = json.loads((run / "summary.json").read_text(encoding="utf-8")).get("metrics", {})
        accuracy = metrics.get("test/accuracy", metrics.get("val/accuracy"))
        if accuracy is None:
            continue
        dp_file = run / DP_FILE
        epsilon = json.loads(dp_file.read_text(encoding="utf-8"))["epsilon"] if dp_file.is_file() else None
        rows.append({"run": relative(run, root), "epsilon": epsilon, "accuracy": accuracy, "path": run})
    return rows


@st.cache_resource(show_spinner="Training the built-in digits model…")
def built_in_run() -> str:
    """A small digits MLP with square activations (exact under CKKS), trained once per app process."""
    from tujie_core import train_from_config
    from tujie_core.runs import parse_config

    raw = {
        "name": "digits-square",
        "output_dir": tempfile.mkdtemp(prefix="tujie-he-"),
        "data": {"name": "digits", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [32], "activation": "square", "dropout": 0.0},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "trainer": {"max_epochs": 15, "progress": "none", "seed": 0},
    }
    return str(train_from_config(parse_config(raw)).run_dir)


@st.cache_resource(show_spinner="Compiling the model and starting the encrypted-inference server…")
def he_service(run_dir: str) -> tuple[HEModel, BackgroundServer]:
    """The run's compiled model served on a local port for this app process."""
    model = compile_run(run_dir)
    return model, BackgroundServer({"model": model}).start()


def test_inputs(run_dir: str, count: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from tujie_core.run import load_run

    run = load_run(run_dir)
    data = run.splits.test or run.splits.val
    x = np.stack([data[i][0].numpy().reshape(-1) for i in range(min(count, len(data)))]).astype(np.float64)
    y = np.array([int(data[i][1]) for i in range(len(x))])
    return x, y, list(run.splits.info.class_names)


def decisions(outputs: np.ndarray, classes: list[str]) -> list[str]:
    index = (outputs[:, 0] > 0).astype(int) if outputs.shape[1] == 1 else outputs.argmax(1)
    return [classes[i] if i < len(classes) else str(i) for i in index]


st.title("Privacy")
st.caption(f"Book ch. {SPEC.chapters}.")
root = runs_root()
runs = runs_under(root)
private = [r for r in runs if r["epsilon"] is not None]

st.header("Accuracy against ε")
if not private:
    offer_demo(SPEC.demo_part, "DP run", "tujie train CONFIG --dp epsilon=3")
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
        with right:
            show_markdown((run_dir / AUDIT_DIR / "audit.md").read_text(encoding="utf-8"), run_dir / AUDIT_DIR)
    else:
        st.info("Not audited yet: press the button above (or `tujie privacy audit RUN_DIR`).")
    try:
        card, _ = privacy_report(run_dir)
    except TujieError as exc:
        st.error(str(exc))
    else:
        with st.expander("privacy report card", expanded=True):
            show_markdown(card.read_text(encoding="utf-8"), run_dir)
else:
    st.info("No finished run folders to audit.")

st.header("Scan data for direct identifiers")
upload = st.file_uploader(
    "a CSV, TSV, JSON-lines or text file", type=["csv", "tsv", "jsonl", "txt"], max_upload_size=MAX_UPLOAD_MB
)
if upload is not None:
    data = upload_bytes(upload, MAX_UPLOAD_MB, (".csv", ".tsv", ".jsonl", ".txt"))
    if data is None:
        st.caption("Scan bigger files with `tujie privacy scan FILE`.")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp, "upload" + Path(upload.name).suffix.lower())
            source.write_bytes(data)
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

st.header("Encrypted inference: what the server sees, what the client gets")
st.caption(
    "CKKS homomorphic encryption (TenSEAL): the client makes the keys, encrypts the features and sends only "
    "ciphertexts and a public context; the server computes the model on them and never sees inputs or results."
)
choices = [BUILT_IN, *(str(r["path"]) for r in runs)]
source = st.selectbox("model (a linear or MLP run; square activations are exact)", choices)
count = st.slider("test samples to send", 1, 64, 8)
if st.button("encrypt, send and predict"):
    try:
        with st.status("Round trip…", expanded=False) as status:
            run_dir = built_in_run() if source == BUILT_IN else source
            model, server = he_service(run_dir)
            x, y, classes = test_inputs(run_dir, count)
            started = time.perf_counter()
            with ServiceClient(server.url, "model") as client:
                status.update(label=f"Keys made (N = {client.parameters.poly_modulus_degree}); encrypting, sending…")
                encrypted = client.predict(x)
                sample = client.keys.encrypt(x[:1]).serialize()
            seconds = time.perf_counter() - started
            status.update(label=f"Done in {seconds:.2f} s", state="complete")
    except TujieError as exc:
        st.error(str(exc))
    else:
        plain = model.plain(x)
        server_side, client_side = st.columns(2)
        with server_side:
            st.subheader("the server sees")
            p = client.parameters
            st.markdown(
                f"- a public context of **{client.timing.context_bytes / 1e6:.2f} MB** (no secret key: it cannot "
                f"decrypt)\n- **{model.input_dim} ciphertexts** (one per feature, all {len(x)} samples packed in "
                f"each), **{client.timing.bytes_sent / 1e6:.1f} MB** in all\n- CKKS N = {p.poly_modulus_degree}, "
                f"primes {list(p.coeff_mod_bit_sizes)} bits, {p.security}-bit security\n- the model: "
                f"`{model.describe()}`"
            )
            st.code(sample[:256].hex(" ", 16), language=None)
            st.caption("the first 256 bytes of a ciphertext, as the server receives it")
        with client_side:
            st.subheader("the client gets")
            labels, expected = decisions(encrypted, classes), decisions(plain, classes)
            truth = [classes[i] if i < len(classes) else str(i) for i in y]
            table = pd.DataFrame({"true": truth, "encrypted prediction": labels, "plaintext prediction": expected})
            st.dataframe(table, hide_index=True)
            agreement = float(np.mean([a == b for a, b in zip(labels, expected, strict=True)]))
            error = float(np.abs(encrypted - plain).max())
            st.metric("agreement with plaintext", f"{agreement:.0%}", help="same decision on every sample")
            st.caption(f"max |output error| {error:.1e}; round trip {seconds:.2f} s for {len(x)} samples")
