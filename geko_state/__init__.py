"""geko_state: the per-sample GEKO state engine (no torch)."""
from .config import (
    GEKO_AGGRESSIVE, GEKO_BALANCED, GEKO_CONSERVATIVE, GEKO_DEFAULT, GEKO_SEEDS, PRESETS, GEKOConfig, NanPolicy,
)
from .curriculum import MOUNTAIN, MountainCurriculum, Phase
from .errors import (
    ConfigError, GekoError, HistoryFileError, InputError, SchemaVersionError, StateFileError, StoreClosedError,
)
from .export import export_rows, keep_mask, kept_ids, parse_buckets, write_ids
from .history import HistoryConfig, HistoryRecord, HistoryWriter, read_summary
from .planning import BudgetKind, EpochPlan, WeightSegment, shard
from .plots import MissingDependencyError, render_plots
from .report import EfficiencyReport, build_report
from .run import Run, open_run
from .schema import COLUMN_NAMES, LOSS_WINDOW, SCHEMA_VERSION, Bucket, bytes_per_sample
from .selection import SELECTION_POLICIES, SelectionConfig, SelectionKind, plan_selection
from .sql import QueryError, connect, query
from .stats import PartitionStats
from .store import StateStore

__version__ = "0.1.0"

__all__ = [
    "BudgetKind", "Bucket", "COLUMN_NAMES", "ConfigError", "EpochPlan", "GEKOConfig", "GEKO_AGGRESSIVE",
    "GEKO_BALANCED", "GEKO_CONSERVATIVE", "GEKO_DEFAULT", "GEKO_SEEDS", "GekoError", "HistoryFileError", "InputError",
    "LOSS_WINDOW", "MOUNTAIN",
    "MountainCurriculum", "NanPolicy", "PRESETS", "PartitionStats", "Phase", "SCHEMA_VERSION",
    "SchemaVersionError", "StateFileError", "StateStore", "StoreClosedError", "WeightSegment",
    "bytes_per_sample", "shard", "__version__",
    # history, SQL, exports, reports
    "EfficiencyReport", "HistoryConfig", "HistoryRecord", "HistoryWriter", "MissingDependencyError",
    "QueryError", "Run", "build_report", "connect", "export_rows", "keep_mask", "kept_ids", "open_run",
    "parse_buckets", "query", "read_summary", "render_plots", "write_ids",
    # selection policies (GEKO and baselines on the same engine)
    "SELECTION_POLICIES", "SelectionConfig", "SelectionKind", "plan_selection",
]
