"""geko_state: the per-sample GEKO state engine (no torch)."""
from __future__ import annotations

from typing import TYPE_CHECKING

# Light modules (no numba, Arrow, polars or DuckDB) are imported eagerly.
from .config import (
    GEKO_AGGRESSIVE,
    GEKO_BALANCED,
    GEKO_CONSERVATIVE,
    GEKO_DEFAULT,
    GEKO_SEEDS,
    PRESETS,
    GEKOConfig,
    NanPolicy,
)
from .curriculum import MOUNTAIN, MountainCurriculum, Phase
from .errors import (
    ConfigError,
    GekoError,
    HistoryFileError,
    InputError,
    SchemaVersionError,
    StateFileError,
    StoreClosedError,
)
from .lazy import lazy_exports

if TYPE_CHECKING:
    from .export import drop_ids, export_rows, keep_mask, kept_ids, parse_buckets, write_ids
    from .history import HistoryConfig, HistoryRecord, HistoryWriter, read_summary
    from .noise import NOISE_SCORES, SuspectsConfig, noise_scores, store_suspects, suspects_table
    from .planning import BudgetKind, EpochPlan, WeightSegment, shard
    from .progress import LearningProgress, PlateauStop, learning_progress, store_progress
    from .plots import MissingDependencyError, render_plots
    from .report import EfficiencyReport, build_report
    from .run import Run, open_run
    from .schema import (
        COLUMN_NAMES,
        LOSS_WINDOW,
        SCHEMA_VERSION,
        Bucket,
        bytes_per_sample,
    )
    from .selection import (
        SELECTION_POLICIES,
        SelectionConfig,
        SelectionKind,
        plan_selection,
    )
    from .sql import QueryError, connect, query
    from .stats import PartitionStats
    from .suspects import Suspects, read_suspects, write_suspects
    from .store import StateStore

__version__ = "0.1.0"

# The rest is imported on first use, so `import geko_state` (and every `geko` command) pays only for
# what it touches: numba kernels, Arrow files, polars, DuckDB and matplotlib cost seconds together.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("drop_ids", "export_rows", "keep_mask", "kept_ids", "parse_buckets", "write_ids"), "export"),
    **dict.fromkeys(("HistoryConfig", "HistoryRecord", "HistoryWriter", "read_summary"), "history"),
    **dict.fromkeys(("BudgetKind", "EpochPlan", "WeightSegment", "shard"), "planning"),
    **dict.fromkeys(("NOISE_SCORES", "SuspectsConfig", "noise_scores", "store_suspects", "suspects_table"), "noise"),
    **dict.fromkeys(("MissingDependencyError", "render_plots"), "plots"),
    **dict.fromkeys(("LearningProgress", "PlateauStop", "learning_progress", "store_progress"), "progress"),
    **dict.fromkeys(("EfficiencyReport", "build_report"), "report"),
    **dict.fromkeys(("Run", "open_run"), "run"),
    **dict.fromkeys(("COLUMN_NAMES", "LOSS_WINDOW", "SCHEMA_VERSION", "Bucket", "bytes_per_sample"), "schema"),
    **dict.fromkeys(("SELECTION_POLICIES", "SelectionConfig", "SelectionKind", "plan_selection"), "selection"),
    **dict.fromkeys(("QueryError", "connect", "query"), "sql"),
    **dict.fromkeys(("Suspects", "read_suspects", "write_suspects"), "suspects"),
    "PartitionStats": "stats",
    "StateStore": "store",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "BudgetKind", "Bucket", "COLUMN_NAMES", "ConfigError", "EpochPlan", "GEKOConfig", "GEKO_AGGRESSIVE",
    "GEKO_BALANCED", "GEKO_CONSERVATIVE", "GEKO_DEFAULT", "GEKO_SEEDS", "GekoError", "HistoryFileError", "InputError",
    "LOSS_WINDOW", "MOUNTAIN",
    "MountainCurriculum", "NanPolicy", "PRESETS", "PartitionStats", "Phase", "SCHEMA_VERSION",
    "SchemaVersionError", "StateFileError", "StateStore", "StoreClosedError", "WeightSegment",
    "bytes_per_sample", "shard", "__version__",
    # history, SQL, exports, reports
    "EfficiencyReport", "HistoryConfig", "HistoryRecord", "HistoryWriter", "MissingDependencyError",
    "QueryError", "Run", "build_report", "connect", "drop_ids", "export_rows", "keep_mask", "kept_ids", "open_run",
    "parse_buckets", "query", "read_summary", "render_plots", "write_ids",
    # label-noise suspects
    "NOISE_SCORES", "Suspects", "SuspectsConfig", "noise_scores", "read_suspects", "store_suspects", "suspects_table",
    "write_suspects",
    # learning progress: whether another epoch still pays
    "LearningProgress", "PlateauStop", "learning_progress", "store_progress",
    # selection policies (GEKO and baselines on the same engine)
    "SELECTION_POLICIES", "SelectionConfig", "SelectionKind", "plan_selection",
]
