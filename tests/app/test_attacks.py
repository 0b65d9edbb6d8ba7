"""The security review's findings, replayed as plain HTTP requests against a real ``geko app``.

Each test sends what the reviewer sent (no browser, no login) to an app on 127.0.0.1 and checks
that it now fails safely: nothing read outside the run, nothing written, deleted or run.

* F1  the SQL box reads and writes any file (read_csv('/etc/passwd'), COPY, ATTACH, INSTALL)
* F2  code execution in two requests: COPY a .pth into site-packages, then Start a training
* F3  Start with "replace" deletes a run's files in any directory; the launch file creates any directory
* F3b a model path "-h" makes argparse exit inside the server, which then stops answering
* F4  no authentication when exposed (see also test_guard.py for the --host rules)
* F5  DNS rebinding (foreign Host), cross-origin requests (foreign Origin), uploads from anywhere
* F7  a run directory with glob characters mixes in other runs' history
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .tiny import make_model_dir, sft_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
PASSWD_READS = [
    "SELECT * FROM read_csv('/etc/passwd', header=false, sep=':')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
]


# ---------------------------------------------------------------------- a real app
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """``python -m geko_torch.app ARGS`` on a free 127.0.0.1 port, spoken to over HTTP."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT),
                    "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost", **(env or {})}
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "geko_torch.app", "--port", str(self.port), *args],
                                         cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        end = time.monotonic() + 600
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"geko app exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            if self.get("/")[0] == 200:
                return
            time.sleep(0.3)
        raise AssertionError(f"geko app did not answer within 180 s:\n{log.read_text()[-3000:]}")

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, str]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=dict(headers or {}))
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except OSError as e:
            return -1, str(e)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return self.request("GET", path, headers=headers)

    def call(self, api: str, data: list[Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """gradio's REST API: POST /gradio_api/call/API, then read the event stream. Returns
        (HTTP status of the POST, the outputs on success / the error text)."""
        status, text = self.request("POST", f"/gradio_api/call/{api}", {"data": data}, headers)
        if status != 200:
            return status, text
        event = json.loads(text)["event_id"]
        status, stream = self.get(f"/gradio_api/call/{api}/{event}", headers)
        kind, payload = None, None
        for line in stream.splitlines():
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: ") and kind in ("complete", "error"):
                payload = line[6:]
        if kind != "complete":
            return 500, payload
        return 200, json.loads(payload)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.get("/")[0] == 200

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, finished_run) -> dict[str, Path]:
    """A workspace (a tiny model, a data file, a GEKO run at the default output directory, a
    run named with glob characters beside another run, a directory of another tool) and, outside
    it, a victim: a real GEKO run that must survive every request."""
    base = tmp_path_factory.mktemp("attacks")
    ws = base / "workspace"
    (ws / "runs").mkdir(parents=True)
    shutil.copytree(finished_run, ws / "runs" / "train")
    shutil.copytree(finished_run, ws / "runs" / "run*")
    shutil.copytree(finished_run, ws / "runs" / "run1")
    make_model_dir(ws / "model")
    write_jsonl(ws / "data.jsonl", sft_rows(16))
    other = ws / "other_tool"
    for rel in ("final_model/config.json", "checkpoint-1/trainer_state.json", "trainer_log.jsonl"):
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        (other / rel).write_text("{}")
    shutil.copytree(finished_run, base / "victim")
    (base / "victim" / "final_model").mkdir()
    (base / "victim" / "final_model" / "config.json").write_text("{}")
    return {"base": base, "ws": ws, "victim": base / "victim", "other": other}


@pytest.fixture(scope="module")
def app(world, tmp_path_factory):
    a = App(["--workspace", str(world["ws"])], cwd=world["ws"], log=tmp_path_factory.mktemp("log") / "app.log")
    yield a
    a.close()


@pytest.fixture(scope="module")
def ro_app(world, tmp_path_factory):
    a = App(["--run", str(world["ws"] / "runs" / "run*")], cwd=world["base"],
            log=tmp_path_factory.mktemp("log") / "ro.log")
    yield a
    a.close()


def _start_form(app: App, **named: Any) -> list[Any]:
    """on_start's inputs by label: the app's own defaults, with ``named`` (label -> value) over them."""
    status, text = app.get("/gradio_api/info")
    assert status == 200, text
    params = json.loads(text)["named_endpoints"]["/on_start"]["parameters"]
    values = []
    for p in params:
        label = p["label"]
        if label in named:
            values.append(named.pop(label))
        else:
            values.append(p.get("parameter_default"))
    assert not named, f"no such fields: {named}"
    return values


def _started(result: Any) -> str:
    return result[0] if isinstance(result, list) else str(result)


# ---------------------------------------------------------------------- F1: SQL reads and writes
@pytest.mark.parametrize("sql", PASSWD_READS)
def test_f1_sql_cannot_read_files_in_either_mode(app, ro_app, sql):
    for a in (app, ro_app):
        status, out = a.call("run_sql", [sql])
        assert status == 200
        table, note = out
        assert "Query error" in note and "Permission Error" in note, note
        assert "root:" not in json.dumps(out)


def test_f1_sql_cannot_write_attach_or_install(app, ro_app, world):
    target = world["base"] / "written"
    target.mkdir(exist_ok=True)
    for a in (app, ro_app):
        for sql in (f"COPY (SELECT 1) TO '{target}/copied.csv'",
                    f"ATTACH '{target}/new.duckdb'",
                    "INSTALL httpfs",
                    f"SELECT 1; COPY (SELECT 1) TO '{target}/second.csv'",
                    "SET enable_external_access = true"):
            status, (table, note) = a.call("run_sql", [sql])
            assert status == 200 and "Query error" in note, (sql, note)
    assert list(target.iterdir()) == []


def test_f1_the_views_still_answer(app, ro_app):
    for a in (app, ro_app):
        status, (table, note) = a.call("run_sql", ["SELECT bucket, count(*) AS n FROM samples GROUP BY bucket"])
        assert status == 200 and "row" in note and "error" not in note.lower(), note


def test_f1_the_suspects_panel_takes_no_path_from_a_request(app, ro_app):
    for a in (app, ro_app):
        status, out = a.call("show_suspects", ["/etc/passwd"])
        # gradio may refuse a value that is not a choice; if it passes, the score registry refuses it
        assert status != 200 or "noise score must be one of" in out[1], out
        assert "root:" not in json.dumps(out)
        status, (table, note) = a.call("show_suspects", ["geko"])
        assert status == 200 and "ranked of 48 samples" in note, note


# ---------------------------------------------------------------------- F3: deleting and creating directories
def test_f3_replace_outside_the_workspace_deletes_nothing(app, world):
    victim = world["victim"]
    before = _tree(victim)
    form = _start_form(app, **{"Model directory": "model", "Dataset file": "data.jsonl",
                               "Output directory (run directory)": str(victim), "text field": "prompt",
                               "Replace an earlier run in the output directory": True})
    status, out = app.call("on_start", form)
    assert status == 200 and "Not started" in _started(out) and "outside the app's workspace" in _started(out)
    assert _tree(victim) == before
    nowhere = world["base"] / "created_by_request"
    form = _start_form(app, **{"Model directory": "model", "Dataset file": "data.jsonl",
                               "Output directory (run directory)": str(nowhere), "text field": "prompt"})
    status, out = app.call("on_start", form)
    assert "Not started" in _started(out) and not nowhere.exists()


def test_f3_symlink_out_of_the_workspace_is_outside(app, world):
    link = world["ws"] / "escape"
    link.symlink_to(world["victim"], target_is_directory=True)
    before = _tree(world["victim"])
    try:
        form = _start_form(app, **{"Model directory": "model", "Dataset file": "data.jsonl",
                                   "Output directory (run directory)": "escape", "text field": "prompt",
                                   "Replace an earlier run in the output directory": True})
        status, out = app.call("on_start", form)
        assert "Not started" in _started(out) and "outside the app's workspace" in _started(out)
    finally:
        link.unlink()
    assert _tree(world["victim"]) == before


def test_f3_a_directory_that_is_not_a_geko_run_is_not_cleared(app, world):
    other = world["other"]
    before = _tree(other)
    form = _start_form(app, **{"Model directory": "model", "Dataset file": "data.jsonl",
                               "Output directory (run directory)": "other_tool", "text field": "prompt",
                               "Replace an earlier run in the output directory": True})
    status, out = app.call("on_start", form)
    assert "Not started" in _started(out) and "not a GEKO run directory" in _started(out), out
    assert _tree(other) == before


def test_f3_nothing_is_cleared_before_the_launch_is_valid(app, world):
    run = world["ws"] / "runs" / "train"
    before = _tree(run)
    for model, data in (("no_such_model", "data.jsonl"), ("model", "no_such.jsonl"), ("/etc", "data.jsonl")):
        form = _start_form(app, **{"Model directory": model, "Dataset file": data,
                                   "Output directory (run directory)": "runs/train", "text field": "prompt",
                                   "Replace an earlier run in the output directory": True})
        status, out = app.call("on_start", form)
        assert "Not started" in _started(out), out
    assert _tree(run) == before


def test_f3_the_data_file_box_reads_nothing_outside(app):
    status, out = app.call("on_data_file", ["/etc/passwd"])
    assert status == 200 and "outside the app's workspace" in out[0] and "root" not in json.dumps(out[1:])


# ---------------------------------------------------------------------- F3b: a request that stopped the server
def test_f3b_dash_h_as_model_path_is_refused_and_the_app_keeps_answering(app):
    for model in ("-h", "--help", "--version"):
        form = _start_form(app, **{"Model directory": model, "Dataset file": "data.jsonl", "text field": "prompt"})
        status, out = app.call("on_start", form)
        assert status == 200 and "Not started" in _started(out) and "may not start with '-'" in _started(out), out
    assert app.alive()
    status, (table, note) = app.call("run_sql", ["SELECT count(*) AS n FROM samples"])
    assert status == 200 and "1 row" in note


# ---------------------------------------------------------------------- F4: authentication
def test_f4_exposed_host_without_login_is_refused(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GEKO_APP_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "geko_torch.app", "--host", "0.0.0.0", "--port", str(_free_port())],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "needs authentication" in r.stderr and "GEKO_APP_TOKEN" in r.stderr


def test_f4_with_a_token_every_route_needs_the_login(world, tmp_path):
    a = App(["--workspace", str(world["ws"])], cwd=world["ws"], log=tmp_path / "auth.log",
            env={"GEKO_APP_TOKEN": "s3cret-token"})
    try:
        status, body = a.get("/config")
        assert status == 401, body
        status, _ = a.call("run_sql", [PASSWD_READS[0]])
        assert status == 401
        status, _ = a.call("on_start", ["model", "data.jsonl"])
        assert status == 401
        status, _ = a.request("POST", "/login", raw=b"username=geko&password=wrong",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status in (400, 401)
        status, body = a.request("POST", "/login", raw=b"username=geko&password=s3cret-token",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
    finally:
        a.close()


# ---------------------------------------------------------------------- F5: browsers
def test_f5_dns_rebinding_host_headers_are_refused(app):
    for host in (f"evil.example:{app.port}", "evil.example", f"127.0.0.1.evil.example:{app.port}",
                 f"localhost:{app.port + 1}"):
        status, _ = app.get("/", headers={"Host": host})
        assert status == 421, host
        status, _ = app.call("run_sql", ["SELECT 1"], headers={"Host": host})
        assert status == 421, host
    for host in (f"127.0.0.1:{app.port}", f"localhost:{app.port}"):
        assert app.get("/", headers={"Host": host})[0] == 200


def test_f5_foreign_origins_cannot_drive_the_app(app, world):
    form = _start_form(app, **{"Model directory": "model", "Dataset file": "data.jsonl",
                               "Output directory (run directory)": "runs/csrf", "text field": "prompt"})
    for origin in ("http://evil.example", "null", f"http://evil.example:{app.port}", f"http://localhost:{app.port + 1}"):
        status, _ = app.call("on_start", form, headers={"Origin": origin})
        assert status == 403, origin
        status, _ = app.call("run_sql", ["SELECT 1"], headers={"Origin": origin})
        assert status == 403, origin
    assert not (world["ws"] / "runs" / "csrf").exists()
    status, (table, note) = app.call("run_sql", ["SELECT 1 AS one"], headers={"Origin": f"http://127.0.0.1:{app.port}"})
    assert status == 200 and "1 row" in note


def test_f5_uploads_are_refused_from_anywhere(app):
    boundary = "geko"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.pth\"\r\n"
            f"Content-Type: text/plain\r\n\r\nimport os\r\n--{boundary}--\r\n").encode()
    for headers in ({}, {"Origin": "http://evil.example"}):
        status, _ = app.request("POST", "/gradio_api/upload", raw=body,
                                headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **headers})
        assert status == 403


# ---------------------------------------------------------------------- F7: glob characters in a run path
def test_f7_a_run_named_with_glob_characters_reads_its_own_history(ro_app, finished_run):
    from geko_state import query

    own = query(finished_run, "SELECT count(*) AS n FROM history")["n"][0]
    status, (table, note) = ro_app.call("run_sql", ["SELECT count(*) AS n FROM history"])
    assert status == 200 and table["value"]["data"] == [[own]], (table, note)


# ---------------------------------------------------------------------- F2: two-request code execution
# Last in the module: its training process keeps the app's launcher busy for a while, and the
# Start requests of the tests above must find it idle.
def test_f2_pth_into_site_packages_then_start_runs_nothing(app, world):
    site = Path(sysconfig.get_paths()["purelib"])
    pth = site / "geko_attack_test.pth"
    marker = world["base"] / "pwned"
    payload = f"import os; open({str(marker)!r}, 'w').write('pwned')"
    status, (table, note) = app.call("run_sql", [f"COPY (SELECT '{payload}') TO '{pth}' (HEADER false, QUOTE '')"])
    assert status == 200 and "Query error" in note, note
    assert not pth.exists()
    # the second request: a real training start inside the workspace (its worker's Python starts)
    form = _start_form(app, **{"Model directory": "model", "Dataset file": "data.jsonl",
                               "Output directory (run directory)": "runs/rce", "text field": "prompt",
                               "max steps": 1, "epochs": 1})
    status, out = app.call("on_start", form)
    assert status == 200 and "Started" in _started(out), out
    log = world["ws"] / "runs" / "rce" / "geko_app.log"
    end = time.monotonic() + 1200
    while time.monotonic() < end and not (world["ws"] / "runs" / "rce" / "final_model").is_dir():
        time.sleep(0.5)
    assert (world["ws"] / "runs" / "rce" / "final_model").is_dir(), log.read_text()[-3000:]
    assert not marker.exists()
