"""The tujie app: one Streamlit app over every domain (`make app`, or `streamlit run apps/streamlit_app.py`).

The sidebar holds the runs folder every page reads (``$TUJIE_RUNS_DIR`` or ``runs`` at first) and the page menu;
the pages live in ``apps/views/`` and are listed in ``tujie_ui.PAGES``.
"""

from __future__ import annotations

import os

import streamlit as st
from tujie_ui import PAGES, RUNS_ENV, VIEWS

st.set_page_config(page_title="tujie 图解", page_icon=":material/menu_book:", layout="wide")
pages = {
    spec.title: st.Page(
        VIEWS / spec.file, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=spec.file == "home.py"
    )
    for spec in PAGES
}
navigation = st.navigation(
    {
        "tujie": [pages["Home"], pages["Training runs"]],
        "Domains": [pages[spec.title] for spec in PAGES if spec.package is not None],
    }
)
st.sidebar.text_input(
    "runs folder",
    value=os.environ.get(RUNS_ENV, "runs"),
    key="runs_root",
    help="where `tujie train` and `make demo` write run folders; every page looks for models here",
)
navigation.run()
