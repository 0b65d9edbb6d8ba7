"""Real pretrained models and human-made data for the compute–quality frontier (benchmarks/bench_frontier.py)."""
from .noise import corrupt_count, flip_labels, shuffle_targets
from .resources import INSTALL_APT, INSTALL_MODELS, cache_dir, minilm_dir, smollm2_dir, wordnet_file
from .tasks import (
    FRONTIER_TASKS,
    FrontierTask,
    TaskSize,
    build_frontier_task,
    cache_lower_layers,
    definition_prompt,
    keep_top_layers,
)
from .wordnet import LEXNAMES, Synset, noun_synsets, parse_line

__all__ = [
    "FRONTIER_TASKS", "INSTALL_APT", "INSTALL_MODELS", "LEXNAMES", "FrontierTask", "Synset", "TaskSize",
    "build_frontier_task", "cache_dir", "cache_lower_layers", "corrupt_count", "definition_prompt",
    "flip_labels", "keep_top_layers", "minilm_dir", "noun_synsets", "parse_line", "shuffle_targets",
    "smollm2_dir", "wordnet_file",
]
