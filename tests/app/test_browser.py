"""``geko app`` end to end in a real headless browser (Debian's chromium + chromedriver, selenium).

One scenario, as a user would do it: fill in a tiny offline fine-tuning (a GPT-2 built here, a
JSONL file), Start, reload the tab (the page re-attaches to the running run, its form filled in),
watch the bucket chart reach a later epoch and the eval line drawn, Stop (a checkpoint appears, the
page says stopped), Resume (the run finishes: summary card, every epoch in epochs.parquet, the loss
per logging step, the moves table whole at 1400 px), run SQL in the SQL box; then the same run in a
read-only ``geko app --run`` started beside it. Screenshots of
every stage go to ``$GEKO_APP_SCREENSHOTS`` (or the test's tmp dir). The page must not fetch anything
from outside localhost.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from geko_torch.app import runs

from .tiny import make_model_dir, sft_rows, write_jsonl

CHROMIUM = os.environ.get("GEKO_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GEKO_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")


def _missing() -> str | None:
    for module, hint in (("gradio", "pip install 'geko-engine[app]'"), ("selenium", "pip install selenium")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({hint})"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver)"
    return None


pytestmark = [pytest.mark.skipif(_missing() is not None, reason=_missing() or ""), pytest.mark.slow]

N_SAMPLES = 192
EPOCHS = 12
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"geko app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"geko app did not answer on {url} within {timeout} s:\n{log.read_text()[-3000:]}")


class App:
    """``python -m geko_torch.app ...`` on a free localhost port."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT),
               "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "geko_torch.app", "--port", str(self.port),
                                          "--refresh", "1", *args], cwd=cwd, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 300) -> App:
        _wait_http(self.url, self.proc, timeout, self.log)
        return self

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the app stops its training process safely on exit
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _browser(downloads: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={tempfile.mkdtemp(dir=downloads)}",
              "--window-size=1600,1400"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


# ---------------------------------------------------------------------- page helpers
class Page:
    def __init__(self, driver: Any, shots: Path) -> None:
        self.d = driver
        self.shots = shots
        self.external: set[str] = set()

    def by_css(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def all_css(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, css)

    def field(self, elem_id: str) -> Any:
        css = f"#{elem_id} textarea, #{elem_id} input"
        return wait_for(lambda: self.all_css(css), f"the field {elem_id}", timeout=60)[0]

    def type(self, elem_id: str, text: str, *, enter: bool = False) -> None:
        from selenium.webdriver.common.keys import Keys

        el = self.field(elem_id)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        el.send_keys(Keys.CONTROL, "a")
        el.send_keys(Keys.DELETE)
        el.send_keys(text)
        el.send_keys(Keys.ENTER if enter else Keys.TAB)

    def value(self, elem_id: str) -> str:
        return self.field(elem_id).get_attribute("value")

    def choose(self, elem_id: str, option: str) -> None:
        el = wait_for(lambda: self.all_css(f"#{elem_id} input"), f"the dropdown {elem_id}", timeout=60)[0]
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()
        item = wait_for(lambda: self.all_css(f'#{elem_id} li[aria-label="{option}"]'), f"option {option} of {elem_id}")
        item[0].click()
        wait_for(lambda: self.value(elem_id) == option, f"{elem_id} = {option}")

    def click(self, elem_id: str) -> None:
        el = self.by_css(f"#{elem_id}")
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()

    def open_accordion(self, title: str) -> None:
        from selenium.webdriver.common.by import By

        button = self.d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{title}']]")
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()

    def text(self, css: str) -> str:
        found = self.all_css(css)
        return found[0].text if found else ""

    def status(self) -> tuple[str, str]:
        found = self.all_css("#geko-status")
        if not found:
            return "", ""
        return found[0].get_attribute("data-kind") or "", found[0].text

    def stat(self, label: str) -> str:
        return self.text(f'.geko-stat[data-stat="{label}"] .geko-stat-value')

    def drawn(self, elem_id: str, role: str) -> list[dict[str, str]]:
        """The data a chart has drawn, from its marks' accessibility labels (the charts are SVG):
        e.g. role "bar" -> [{"epoch": "1", "share": "20", "bucket": "HARD"}, ...]."""
        labels = self.d.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute('aria-label') || '')",
            f"#{elem_id} [aria-roledescription='{role}']")
        return [dict(part.split(": ", 1) for part in label.split("; ") if ": " in part) for label in labels]

    def chart_epochs(self) -> list[int]:
        return sorted({int(b["epoch"]) for b in self.drawn("geko-bucket-plot", "bar") if "epoch" in b})

    def chart_steps(self, series: str) -> list[int]:
        return sorted(int(p["step"]) for p in self.drawn("geko-loss-plot", "point") if p.get("series") == series)

    def line_colors(self, series: str) -> list[str]:
        """The stroke colors of the loss chart's drawn line of ``series`` and of its legend symbol
        (a series without a color is drawn invisibly: no stroke)."""
        return self.d.execute_script(
            """const root = document.querySelector('#geko-loss-plot');
               if (!root) return [];
               const line = [...root.querySelectorAll("[aria-roledescription='line mark']")]
                 .filter(e => (e.getAttribute('aria-label') || '').includes('series: ' + arguments[0]));
               const labels = [...root.querySelectorAll('.role-legend-label text')].map(t => t.textContent);
               const symbols = [...root.querySelectorAll('.role-legend-symbol path')];
               const legend = labels.includes(arguments[0]) ? [symbols[labels.indexOf(arguments[0])]] : [];
               return [...line, ...legend].map(e => e && e.getAttribute('stroke')).filter(c => c);""", series)

    def overflow(self, elem_id: str) -> list[str]:
        """Descendants of ``elem_id`` whose content is wider than they are (cut off or scrolled)."""
        return self.d.execute_script(
            """const root = document.getElementById(arguments[0]);
               return [root, ...root.querySelectorAll('*')]
                 .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
                 .map(e => e.tagName + '.' + e.className + ' ' + e.clientWidth + '<' + e.scrollWidth);""", elem_id)

    def shot(self, name: str, width: int = 1600) -> Path:
        """A full-page screenshot (the window grown to the page's height)."""
        print(f"{time.monotonic() - T0[0]:6.1f} s  {name}", flush=True)
        self.d.execute_script("window.scrollTo(0, 0)")
        self.d.set_window_size(width, 900)
        time.sleep(0.2)
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(width, min(max(int(height) + 120, 900), 6000))
        time.sleep(0.3)
        path = self.shots / f"{name}.png"
        self.d.save_screenshot(str(path))
        self.collect_network()
        return path

    def collect_network(self) -> None:
        for entry in self.d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                url = msg["params"]["request"]["url"]
                if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.split("//", 1)[1].startswith(
                        ("127.0.0.1", "localhost")):
                    self.external.add(url)


T0 = [time.monotonic()]


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 120, every: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < end:
        try:
            got = cond()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - a stale element while the page re-renders: retry
            last_err = e
        time.sleep(every)
    detail = f" (last error: {last_err})" if last_err else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


def _epochs_done(page: Page) -> int:
    text = page.stat("Epochs done")
    return int(text.split("/")[0]) if text and text.split("/")[0].strip().isdigit() else 0


def _logged_steps(run_dir: Path) -> list[int]:
    """The steps of the run's step lines that carry a per-step loss."""
    return sorted({r["step"] for r in runs.read_log(run_dir) if "learning_rate" in r
                   and isinstance(r.get("step_loss"), float) and r["step_loss"] == r["step_loss"]})


def _caption_epoch(page: Page) -> int:
    text = page.text("#geko-bucket-caption")
    if text.startswith("After epoch "):
        return int(text.split()[2].rstrip(":"))
    return 0


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("geko_app_e2e")


@pytest.fixture(scope="module")
def shots(workdir) -> Path:
    d = Path(os.environ.get("GEKO_APP_SCREENSHOTS") or workdir / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def apps(workdir) -> Iterator[tuple[App, App, Path]]:
    run_dir = workdir / "run"
    run_dir.mkdir()  # so the read-only app can be started beside the full one, before the run
    full = App(["--output-dir", str(run_dir)], workdir / "app.log", workdir)
    view = App(["--run", str(run_dir)], workdir / "app_readonly.log", workdir)
    try:
        yield full.wait(), view.wait(), run_dir
    finally:
        full.close()
        view.close()


@pytest.fixture(scope="module")
def files(workdir) -> dict[str, Path]:
    return {"model": make_model_dir(workdir / "tiny-gpt2", n_embd=64),
            "data": write_jsonl(workdir / "sums.jsonl", sft_rows(N_SAMPLES)),
            "eval": write_jsonl(workdir / "sums_eval.jsonl", sft_rows(16, seed=1))}


@pytest.fixture
def page(workdir, shots) -> Iterator[Page]:
    driver = _browser(workdir)
    try:
        yield Page(driver, shots)
    finally:
        driver.quit()


# ---------------------------------------------------------------------- the scenario
def test_start_watch_stop_resume_sql_in_a_browser(apps, files, page, workdir):
    t0 = time.monotonic()
    print(f"{t0 - T0[0]:6.1f} s  apps up", flush=True)
    full, view, run_dir = apps
    p = page
    p.d.get(full.url)
    wait_for(lambda: p.status()[0] == "empty", "the empty dashboard")
    assert "PyTorch" in p.text("#geko-hardware")
    p.shot("01_empty")

    # --- the form: model, data (the field pickers fill from the file's columns), settings
    p.type("geko-model-dir", str(files["model"]))
    p.type("geko-data-file", str(files["data"]), enter=True)
    wait_for(lambda: "topic" in p.text("#geko-data-note"), "the dataset's columns")
    wait_for(lambda: p.value("geko-opt-prompt_field") == "prompt", "prompt field guessed from the columns")
    assert p.value("geko-opt-response_field") == "response"
    p.choose("geko-opt-response_field", "response")
    for elem, value in (("epochs", EPOCHS), ("batch_size", 8), ("lr", 0.003), ("warmup_steps", 1), ("seed", 0)):
        p.type(f"geko-opt-{elem}", str(value))
    p.open_accordion("Precision and efficiency")  # closed accordions are not in the page until opened
    p.type("geko-opt-workers", "0")
    p.type("geko-opt-max_length", "24")
    p.type("geko-opt-eval_file", str(files["eval"]))
    p.open_accordion("GEKO selection")
    p.choose("geko-opt-preset", "conservative")  # fills every GEKOConfig control with the preset
    p.open_accordion("GEKOConfig: every setting (the preset above fills them in)")
    wait_for(lambda: float(p.value("geko-cfg-freeze_confidence")) == 0.8, "the preset's freeze confidence")
    assert float(p.value("geko-cfg-freeze_quality")) == 0.75
    assert p.value("geko-cfg-bucket_weights") == "2, 2, 1"
    p.type("geko-opt-budget", "full")
    p.open_accordion("Advanced")
    p.type("geko-train-logging_steps", "2")
    assert p.value("geko-opt-output_dir") == str(run_dir)
    p.shot("02_form")

    # --- Start: the dashboard follows the run until a later epoch shows in the bucket chart
    p.click("geko-start")
    wait_for(lambda: "geko train" in p.text("#geko-message"), "the start message")
    assert "--preset conservative" in p.text("#geko-message") and "--budget full" in p.text("#geko-message")
    wait_for(lambda: p.status()[0] in ("starting", "training"), "training to start")

    # --- a reload while training: the page re-attaches to the run and fills the form it was started with
    p.d.refresh()
    wait_for(lambda: p.status()[0] in ("starting", "training"), "the running run's status after a reload")
    wait_for(lambda: str(run_dir) in p.text("#geko-message"), "the running run's directory after a reload")
    assert "Training is running" in p.text("#geko-message") and "geko train" in p.text("#geko-message")
    assert p.value("geko-opt-output_dir") == str(run_dir) and p.value("geko-model-dir") == str(files["model"])
    assert p.value("geko-data-file") == str(files["data"]) and p.value("geko-opt-epochs") == str(EPOCHS)
    assert p.value("geko-opt-prompt_field") == "prompt" and p.value("geko-opt-response_field") == "response"
    p.shot("02b_reloaded")

    first = wait_for(lambda: p.chart_epochs(), "the first epoch's bars in the bucket chart", timeout=600)
    wait_for(lambda: p.chart_epochs()[-1] >= first[-1] + 1, "a later epoch in the bucket chart", timeout=600,
             every=0.1)
    p.click("geko-stop")  # right away: the run must still be going
    epoch_seen = p.chart_epochs()[-1]
    assert p.chart_epochs() == list(range(1, epoch_seen + 1))
    assert _caption_epoch(p) >= epoch_seen
    assert p.chart_steps(runs.LOSS_SERIES), "the loss chart draws the training loss"
    assert p.stat("Steps/sec") not in ("", "-") or p.status()[0] == "stopping"
    p.shot("03_training")

    # --- Stop: halts between steps with a resumable checkpoint
    wait_for(lambda: p.status()[0] == "stopped", "the stopped status", timeout=600)
    assert "Stopped at step" in p.status()[1]
    assert "Stopped at step" in p.text("#geko-summary")
    ckpts = sorted(run_dir.glob("checkpoint-*"))
    assert ckpts and all((c / "trainer_state.json").is_file() for c in ckpts)
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert state["extra"]["finished"] is False
    stopped_epochs = pl.read_parquet(run_dir / "epochs.parquet").height
    assert epoch_seen <= stopped_epochs < EPOCHS, "stopped before the end"
    p.shot("04_stopped")

    # --- Resume: continues from the newest checkpoint to the end
    p.click("geko-resume")
    wait_for(lambda: "Resumed from checkpoint-" in p.text("#geko-message"), "the resume message")
    wait_for(lambda: p.status()[0] == "complete", "the run to complete", timeout=1200, every=0.5)
    wait_for(lambda: "Training complete" in p.text("#geko-summary"), "the summary card")
    summary = p.text("#geko-summary")
    assert "Compute saved" in summary and "Final loss" in summary and "Eval loss" in summary
    assert float(p.stat("Eval loss")) > 0
    wait_for(lambda: "eval" in p.text("#geko-loss-plot"), "the eval series in the loss chart's legend")
    # drawn in its color, line and legend symbol (a series that appeared after the first drawing had none)
    wait_for(lambda: p.line_colors(runs.EVAL_SERIES) == ["#dc2626", "#dc2626"], "the eval line drawn in red")
    epochs = pl.read_parquet(run_dir / "epochs.parquet")
    assert epochs["epoch"].to_list() == list(range(1, EPOCHS + 1))
    assert _epochs_done(p) == EPOCHS and p.stat("ETA") == "done"
    assert _caption_epoch(p) == EPOCHS
    # the charts show the whole run: every epoch's bars, the loss up to the last step, the eval points
    wait_for(lambda: p.chart_epochs() == list(range(1, EPOCHS + 1)), "every epoch in the bucket chart")
    last_bars = [b for b in p.drawn("geko-bucket-plot", "bar") if int(b["epoch"]) == EPOCHS]
    assert sorted(b["bucket"] for b in last_bars) == ["FOCUS", "FREEZE", "HARD", "LIGHT"]
    assert abs(sum(float(b["share"]) for b in last_bars) - 100) < 1e-6
    # the training loss: one point per logging step (every 2nd step), smoothed, not the epochs' running means
    logged = _logged_steps(run_dir)
    assert logged and all(s % 2 == 0 for s in logged)
    wait_for(lambda: p.chart_steps(runs.LOSS_SERIES) == logged, "a loss point for each logging step")
    curve = runs.loss_curve(runs.read_log(run_dir)).filter(series=runs.LOSS_SERIES)
    drawn = [float(d["loss"]) for d in sorted(p.drawn("geko-loss-plot", "point"), key=lambda d: int(d["step"]))
             if d.get("series") == runs.LOSS_SERIES]
    assert drawn == pytest.approx(curve["loss"].to_list(), rel=1e-6)
    evals = runs.eval_points(runs.read_log(run_dir))
    assert len(evals) == EPOCHS  # one evaluation per epoch
    # the chart draws one point per step: an epoch that trained nothing (every sample LIGHT in a
    # curriculum phase that draws no LIGHT) is evaluated at the same step as the one before it
    wait_for(lambda: p.chart_steps("eval") == sorted({int(r["step"]) for r in evals}), "an eval point per eval step")
    assert p.line_colors(runs.LOSS_SERIES) == ["#2563eb", "#2563eb"]
    moves = [r.text.split()[0] for r in p.all_css("#geko-transitions .virtual-row")]
    assert moves == ["FREEZE", "LIGHT", "FOCUS", "HARD"], moves
    p.shot("05_complete")

    # --- the moves table keeps its columns whole at 1400 px (it was cut off and scrolled)
    p.d.set_window_size(1400, 1400)
    wait_for(lambda: not p.overflow("geko-transitions"), "the moves table to fit at 1400 px")
    wait_for(lambda: p.d.execute_script(
        "const t = document.querySelector('#geko-transitions table').getBoundingClientRect();"
        "const b = document.getElementById('geko-transitions').getBoundingClientRect();"
        "return t.width > 0 && t.right <= b.right + 1;"), "the moves table inside its box")
    p.shot("05b_moves_1400", width=1400)

    # --- SQL box: a table of results, and an error as text
    p.type("geko-sql", "SELECT (SELECT count(*) FROM samples) AS n_samples, "
                       "(SELECT max(epoch) FROM epochs) AS last_epoch")
    p.click("geko-sql-run")
    wait_for(lambda: "1 row" in p.text("#geko-sql-note"), "the query result")
    cells = wait_for(lambda: [c.text.strip() for c in p.all_css("#geko-sql-result .body-cell")], "result cells")
    assert cells == [str(N_SAMPLES), str(EPOCHS)], cells
    headers = p.text("#geko-sql-result thead")
    assert "n_samples" in headers and "last_epoch" in headers, headers
    p.shot("06_sql")
    p.type("geko-sql", "SELECT nope FROM samples")
    p.click("geko-sql-run")
    wait_for(lambda: "Query error" in p.text("#geko-sql-note"), "the query error as text")
    assert "nope" in p.text("#geko-sql-note")
    p.shot("07_sql_error")

    # --- Suspects: the run's most suspicious samples, each beside its data row (the form's fields)
    p.open_accordion("Suspects: samples whose label is probably wrong (docs/noise.md)")
    p.choose("geko-suspects-score", "loss")
    p.click("geko-suspects-run")
    wait_for(lambda: "top 50 by loss score" in p.text("#geko-suspects-note"), "the suspects note")
    assert f"of {N_SAMPLES} samples" in p.text("#geko-suspects-note")
    headers = p.text("#geko-suspects-result thead")
    assert "sample_id" in headers and "text" in headers, headers
    wait_for(lambda: "prompt: question : add" in p.text("#geko-suspects-result"), "the data rows beside the suspects")
    p.shot("07b_suspects")

    # --- Clear: the dashboard empties, the run directory stays
    p.click("geko-clear")
    wait_for(lambda: p.status()[0] == "empty", "the cleared dashboard")
    assert "Cleared" in p.text("#geko-message") and (run_dir / "epochs.parquet").is_file()
    assert not p.text("#geko-summary") and not p.all_css("#geko-sql-result .body-cell")
    assert not p.all_css("#geko-suspects-result .body-cell")

    # --- the same run in the read-only app started beside it: dashboard only
    p.d.get(view.url)
    wait_for(lambda: p.status()[0] == "complete", "the read-only dashboard")
    assert not p.all_css("#geko-start") and not p.all_css("#geko-stop") and not p.all_css("#geko-resume")
    wait_for(lambda: _caption_epoch(p) == EPOCHS and p.chart_epochs() == list(range(1, EPOCHS + 1)),
             "the read-only bucket chart")
    assert "read-only" in p.text("#geko-title")
    p.shot("08_readonly")

    assert not p.external, f"the page fetched from outside localhost: {sorted(p.external)}"
    print(f"{time.monotonic() - t0:6.1f} s  scenario done (a figure, not a limit: speed is not a test)", flush=True)
