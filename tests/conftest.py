import numpy as np
import pytest

from geko_state import GEKOConfig, StateStore


@pytest.fixture
def cfg() -> GEKOConfig:
    return GEKOConfig(use_curriculum=False, log_bucket_stats=False)


@pytest.fixture(params=["numba", "numpy"])
def kernels(request) -> str:
    return request.param


def snapshot(store: StateStore) -> dict[str, bytes]:
    """Byte-exact copy of every column, to assert that a failed call changed nothing."""
    from geko_state.schema import COLUMN_NAMES

    return {c: np.ascontiguousarray(store.column(c)).tobytes() for c in COLUMN_NAMES}
