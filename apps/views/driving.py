"""Driving: pick a scenario and an agent (a trained run or a baseline), watch a seeded
episode, read the run's comparison table, and follow an ensemble's uncertainty with its fallback moments marked
(tujie_driving)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image
from tujie_ui import finished_runs, missing_package, offer_demo, page_spec, relative, runs_root

from tujie_core import TujieError

try:
    from tujie_driving import SCENARIOS, Agent, Scenario, create_agent, render_episode
    from tujie_driving.scenarios import default_settings
except ImportError as exc:
    missing_package("tujie-driving", exc)

SPEC = page_spec("driving.py")
BASELINES = ["idm", "random"]


@st.cache_resource
def trained(run: str) -> Agent:
    return Agent.load(run)


@st.cache_data(max_entries=8, show_spinner="Driving and rendering the episode…")
def episode(run: str, scenario: str, density: float, seed: int) -> tuple[bytes, dict, list[dict]]:
    """A rendered episode as GIF bytes, its statistics and its per-step trace."""
    agent = trained(run) if run not in BASELINES else create_agent(run, scenario)
    base = agent.scenario if run not in BASELINES else Scenario(scenario)
    config = dict(base.config) if base.name == scenario else {}
    if "vehicles_density" in default_settings(scenario):  # merge, roundabout… have fixed traffic
        config["vehicles_density"] = density
    played = render_episode(agent, Scenario(scenario, config, base.observation), seed)
    frames = [Image.fromarray(f) for f in played.frames]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    stats = {
        "return": played.ret,
        "steps": played.length,
        "crashed": played.crashed,
        "speed (m/s)": played.speed,
        "fallbacks": played.fallbacks,
    }
    return gif.getvalue(), stats, played.trace


def uncertainty_chart(trace: list[dict]) -> alt.LayerChart:
    frame = pd.DataFrame(trace)
    base = alt.Chart(frame).encode(x=alt.X("step:Q", title="step"))
    line = base.mark_line().encode(y=alt.Y("uncertainty:Q", title="ensemble disagreement (Q std)"))
    threshold = base.mark_line(strokeDash=[4, 4], color="grey").encode(y="threshold:Q")
    fallbacks = (
        alt.Chart(frame[frame["fallback"] > 0])
        .mark_point(color="red", filled=True, size=70)
        .encode(x="step:Q", y="uncertainty:Q")
    )
    return line + threshold + fallbacks


st.title("Driving")
st.caption(f"Book ch. {SPEC.chapters}.")
root = runs_root()
runs = [run for run in finished_runs(root, "driving") if (run / "agent").is_dir()]
if not runs:
    st.caption("No trained agent yet: the baselines drive below.")
    offer_demo(SPEC.demo_part, "driving run", "tujie driving train --agent dqn-ensemble")
choices = [relative(p, root) for p in runs] + BASELINES
col1, col2, col3, col4 = st.columns(4)
chosen = col1.selectbox("agent (a run folder or a baseline)", choices)
run = str(root / chosen) if chosen not in BASELINES else chosen
default = trained(run).scenario.name if chosen not in BASELINES else "highway-fast"
names = list(SCENARIOS)
scenario = col2.selectbox("scenario", names, index=names.index(default) if default in names else 0)
density = col3.slider("traffic density", 0.5, 3.0, 1.0, 0.25, help="highway scenarios; others have fixed traffic")
seed = int(col4.number_input("episode seed", 0, 1_000_000, 20_000))

st.header("An episode")
try:
    gif, stats, trace = episode(run, scenario, density, seed)
except TujieError as exc:
    st.error(str(exc))
    st.stop()
st.image(gif, caption=f"{chosen} in {scenario}, density {density}, seed {seed}")
cells = st.columns(len(stats))
for cell, (label, value) in zip(cells, stats.items(), strict=True):
    cell.metric(label, f"{value:.2f}" if isinstance(value, float) else str(value))

if trace:
    st.header("Uncertainty and fallback")
    st.altair_chart(uncertainty_chart(trace), width="stretch")
    st.caption(
        "Red points: steps where the ensemble's disagreement passed the threshold (dashed) and the fallback drove."
    )

if chosen not in BASELINES:
    st.header("Comparison on the run's test seeds")
    evaluation = Path(run) / "evaluation.json"
    if evaluation.is_file():
        table = {name: result["summary"] for name, result in json.loads(evaluation.read_text()).items()}
        st.dataframe(pd.DataFrame(table).T.round(3), width="stretch")
    else:
        st.info("This run has no test episodes (evaluation.test_episodes: 0).")
