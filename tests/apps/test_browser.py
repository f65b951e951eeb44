"""The app in a real browser: `tujie demo --quick` trains the shipped defaults into a runs folder, the app starts on
a free localhost port, and headless Chromium (Debian's package, driven by Playwright: no browser download) visits
every page, performs its main action, checks the key element appears and no Streamlit exception box is shown, and
saves a screenshot per page (``$TUJIE_SCREENSHOTS``, default ``runs/browser`` in the checkout).

Run with ``make test-browser`` (CI does); without Chromium or Playwright the test is skipped, except under CI.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).parents[2]
CHROMIUM = os.environ.get("TUJIE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("TUJIE_SCREENSHOTS", ROOT / "runs" / "browser"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OFFLINE = {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false", "MPLBACKEND": "Agg"}
RUN_TIMEOUT_MS = 240_000  # a page's first run loads its models on 2 cores


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make setup)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium fonts-noto-cjk)"
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder holding what `tujie demo --quick` trains: the app's shipped defaults."""
    if (why := _missing()) is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {why}")
        pytest.skip(why)
    root = tmp_path_factory.mktemp("app") / "runs"
    tujie = Path(sys.executable).parent / "tujie"
    command = [str(tujie), "demo", "--quick", "--output-dir", str(root / "demo")]
    done = subprocess.run(command, env=os.environ | OFFLINE, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served by `streamlit run` on a free localhost port, on the demo's runs folder."""
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "streamlit.log").open("w")
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "apps" / "streamlit_app.py")]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true"]
    command += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    env = os.environ | OFFLINE | {"TUJIE_RUNS_DIR": str(runs)}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"streamlit exited: {Path(log.name).read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "streamlit did not answer /_stcore/health in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(app_url: str) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def settle(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the app's script run is over (Streamlit's running indicator gone)."""
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout_ms)


def digit_png(tmp: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[7] * 16).clip(0, 255).astype("uint8")
    path = tmp / "digit.png"
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((64, 64), Image.Resampling.NEAREST).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def home(page, tmp: Path) -> None:
    page.get_by_text("Latest tujie demo results").first.wait_for()
    page.locator('[data-testid="stDataFrame"]').nth(2).wait_for()  # pages, demo parts, demo metrics


def runs_page(page, tmp: Path) -> None:
    page.get_by_role("tab", name="report").click()
    report = page.get_by_role("tabpanel").filter(has=page.locator("h1"))
    report.locator("h1").first.wait_for()  # the report's title
    report.locator('[data-testid="stImage"]').first.wait_for()  # its plots, drawn in place
    page.get_by_text("Compare two runs").first.wait_for()


def text(page, tmp: Path) -> None:
    box = page.locator("textarea").first
    box.fill("The invoice was wrong and I was charged twice, please refund me.")
    box.press("Control+Enter")
    settle(page)
    page.locator(".tujie-attributions").first.wait_for()
    page.get_by_text("refund", exact=True).first.wait_for()
    page.locator('[data-testid="stMetricValue"]').first.wait_for()


def vision(page, tmp: Path) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(digit_png(tmp)))
    settle(page)
    page.get_by_text("predicted class").first.wait_for()
    page.get_by_text("detections (red)").first.wait_for()
    page.get_by_text("16 samples of class").first.wait_for()


def driving(page, tmp: Path) -> None:
    page.get_by_text("An episode").first.wait_for()
    page.locator('[data-testid="stSelectbox"]').first.click()  # the agent: the IDM baseline
    page.get_by_role("option", name="idm", exact=True).click()
    settle(page)
    page.get_by_text("idm in highway-fast").first.wait_for()  # the episode's caption, under its animation
    page.get_by_text("crashed").first.wait_for()


def imaging(page, tmp: Path) -> None:
    from playwright.sync_api import expect

    caption = page.get_by_text("predicted mask (red)").first
    shown = caption.inner_text()  # "slice K of N: predicted mask (red), true outline (green)"
    page.get_by_role("slider").nth(1).press("ArrowRight")  # the slice slider, one slice on
    settle(page)
    expect(caption).not_to_have_text(shown)
    page.get_by_text("overlay (red: what drove the prediction)").first.wait_for()
    page.get_by_text("calibrated").first.wait_for()


def molecules(page, tmp: Path) -> None:
    page.locator('[data-testid="stDataFrame"]').first.wait_for()  # the example SMILES, predicted
    page.get_by_role("button", name="Screen the shipped library").first.click()
    settle(page)
    page.get_by_text("ranked 2,").first.wait_for()


def privacy(page, tmp: Path) -> None:
    page.get_by_text("Accuracy against ε").first.wait_for()
    page.get_by_role("button", name="encrypt, send and predict").first.click()
    settle(page)
    page.get_by_text("the client gets").first.wait_for()
    page.get_by_text("agreement with plaintext").first.wait_for()


PAGES: list[tuple[str, str, Callable]] = [
    ("", "home", home),
    ("runs", "runs", runs_page),
    ("text", "text", text),
    ("vision", "vision", vision),
    ("driving", "driving", driving),
    ("imaging", "imaging", imaging),
    ("molecules", "molecules", molecules),
    ("privacy", "privacy", privacy),
]


@pytest.mark.parametrize(("path", "name", "action"), PAGES, ids=[name for _, name, _ in PAGES])
def test_page_in_chromium(path: str, name: str, action: Callable, app_url: str, browser, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(RUN_TIMEOUT_MS)
    try:
        page.goto(f"{app_url}/{path}", wait_until="domcontentloaded")
        page.locator('[data-testid="stApp"]').wait_for()
        page.locator("h1").first.wait_for()
        settle(page)
        action(page, tmp_path)
        settle(page)
        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()
        assert page.get_by_text("图解").count() >= 1 or name != "home"
        assert not errors, errors
    finally:
        height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight ?? 1000")
        page.set_viewport_size({"width": 1400, "height": min(max(int(height) + 40, 1000), 8000)})
        page.wait_for_timeout(500)  # Streamlit's main block scrolls by itself: grow the window to show all of it
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        index = [n for _, n, _ in PAGES].index(name) + 1
        page.screenshot(path=str(SCREENSHOTS / f"{index}-{name}.png"), full_page=True)
        context.close()
