"""DATA as a Hugging Face Hub dataset id: loaded with ``datasets.load_dataset`` through the local cache."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geko_state.errors import InputError

from .paths import DEFAULT_SPLIT, HUB_ID

if TYPE_CHECKING:
    import polars as pl

__all__ = ["DEFAULT_SPLIT", "is_hub_dataset", "load_data"]

def is_hub_dataset(value: str | os.PathLike) -> bool:
    """Whether DATA names a Hub dataset: not an existing path, no dataset-file suffix, and shaped
    like a repository id (``org/name``)."""
    from geko_state.datafiles import DATA_FORMATS

    text = str(value)
    path = Path(text)
    return not path.exists() and path.suffix.lower() not in DATA_FORMATS and bool(HUB_ID.match(text))


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        from geko_state.errors import MissingDependencyError

        raise MissingDependencyError(f"a Hub dataset needs the datasets package: pip install 'geko-engine[hf]' "
                                     f"({e})") from None
    return datasets


def _load_hub(repo_id: str, split: str, subset: str | None, what: str) -> pl.DataFrame:
    import polars as pl

    datasets = _datasets()
    try:
        ds = datasets.load_dataset(repo_id, name=subset, split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise InputError(f"{what} {repo_id}: no split {split!r} ({e}); choose one with --split") from None
        raise InputError(f"{what} {repo_id}: cannot load it ({e})") from None
    except (ConnectionError, FileNotFoundError, OSError) as e:
        from huggingface_hub import constants

        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{type(e).__name__}"
        local = repo_id.rsplit("/", 1)[-1]
        pick = f"'{repo_id}'" + (f", '{subset}'" if subset else "") + f", split='{split}'"
        raise InputError(
            f"{what} {repo_id}: not a local file or directory, and not in the Hugging Face datasets cache "
            f"{datasets.config.HF_DATASETS_CACHE} ({why}). Make a local copy on a machine with network access: "
            f"python -c \"import datasets; datasets.load_dataset({pick}).save_to_disk('{local}')\", then pass "
            f"./{local}") from None
    table = pl.from_arrow(ds.data.table)
    if not isinstance(table, pl.DataFrame) or table.height == 0:
        raise InputError(f"{what} {repo_id}: split {split!r} has no rows")
    return table


def load_data(value: str | os.PathLike, what: str, *, split: str | None = None,
              subset: str | None = None) -> pl.DataFrame:
    """DATA as a ``polars.DataFrame``: a dataset file or saved-dataset directory
    (:func:`geko_state.datafiles.read_table`), or a Hub dataset id (``split``, default ``train``;
    ``subset``: its configuration). ``split``/``subset`` with a local file are refused."""
    if is_hub_dataset(value):
        return _load_hub(str(value), split or DEFAULT_SPLIT, subset, what)
    if split is not None or subset is not None:
        raise InputError(f"--split/--subset choose a part of a Hub dataset; {what} {value} is a local file")
    from geko_state.datafiles import read_table

    return read_table(value, what)
