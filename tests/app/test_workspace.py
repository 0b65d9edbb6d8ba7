"""Workspace.path: every path from a request is taken inside the workspace or refused."""
from __future__ import annotations

import pytest

from geko_state.errors import ConfigError, InputError
from geko_torch.app.workspace import Workspace


def test_paths_inside_are_resolved_from_the_root(tmp_path):
    (tmp_path / "data").mkdir()
    ws = Workspace(tmp_path)
    assert ws.path("data/x.jsonl", "Dataset file") == tmp_path.resolve() / "data" / "x.jsonl"
    assert ws.path(str(tmp_path / "runs" / "new"), "Output directory") == tmp_path.resolve() / "runs" / "new"
    assert ws.path(" ./data ", "d") == tmp_path.resolve() / "data"
    assert ws.path(".", "d") == tmp_path.resolve()
    assert ws.path("./-h", "d") == tmp_path.resolve() / "-h"


@pytest.mark.parametrize("value, why", [
    ("/etc/passwd", "outside the app's workspace"),
    ("../elsewhere", "outside the app's workspace"),
    ("data/../../x", "outside the app's workspace"),
    ("~/x", "outside the app's workspace"),
    ("-h", "may not start with '-'"),
    ("--help", "may not start with '-'"),
    ("", "give a path inside the workspace"),
    ("   ", "give a path inside the workspace"),
    (None, "give a path inside the workspace"),
    ("a\x00b", "NUL"),
])
def test_refused_paths(tmp_path, value, why):
    ws_dir = tmp_path / "ws"  # "../elsewhere" must leave it
    ws_dir.mkdir()
    with pytest.raises(InputError, match=why):
        Workspace(ws_dir).path(value, "Model directory")


def test_a_symlink_out_of_the_workspace_is_outside(tmp_path):
    ws_dir, outside = tmp_path / "ws", tmp_path / "outside"
    ws_dir.mkdir()
    outside.mkdir()
    (ws_dir / "link").symlink_to(outside, target_is_directory=True)
    ws = Workspace(ws_dir)
    with pytest.raises(InputError, match="outside"):
        ws.path("link/run", "Output directory")
    assert not ws.contains("link") and ws.contains("inside")


def test_the_root_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="--workspace .*no such directory"):
        Workspace(tmp_path / "missing")
