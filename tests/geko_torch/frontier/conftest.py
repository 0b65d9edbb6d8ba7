"""The frontier's real resources: present in CI (.ci/run installs them), skipped elsewhere, saying how to install."""
import pytest

from geko_state.errors import MissingDependencyError


def need(resource):
    try:
        return resource()
    except MissingDependencyError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2 converted once per session into a private cache (the first conversion is part of the test)."""
    import os

    from geko_torch.frontier import smollm2_dir

    old = os.environ.get("GEKO_CACHE")
    os.environ["GEKO_CACHE"] = str(tmp_path_factory.mktemp("geko-cache"))
    try:
        yield need(smollm2_dir)
    finally:
        if old is None:
            os.environ.pop("GEKO_CACHE", None)
        else:
            os.environ["GEKO_CACHE"] = old
