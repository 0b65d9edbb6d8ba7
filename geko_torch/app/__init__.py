"""``geko app``: launch GEKO fine-tuning without code and watch a run's buckets live (gradio).

Modules, one concern each:

* ``fields``: form fields of every GEKOConfig setting and the app's GEKOTrainingArgs settings;
* ``command``: form -> ``geko train`` command line + launch file (``RUN_DIR/geko_app.json``);
* ``worker``: the training process (``geko train`` with the app's settings and a safe SIGINT stop);
* ``process``: Start / Stop / Resume of that process;
* ``datafile``: a dataset file's columns for the field pickers;
* ``runs``: readers of a run directory for the dashboard (log, buckets, moves, ETA, checkpoints);
* ``dashboard``: the dashboard's texts (status, stat boxes, summary card, hardware line);
* ``suspects``: the Suspects panel (the run's probably mislabeled samples, with their data rows);
* ``ui``: the gradio page; ``cli``: the ``geko app`` command.

Only ``ui`` and ``cli.run`` import gradio (``pip install 'geko-engine[app]'``).
"""
from .cli import add_parser, main

__all__ = ["add_parser", "main"]
