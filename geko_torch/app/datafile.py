"""The columns of a local dataset file, for the form's field pickers (read from the schema, not the rows)."""
from __future__ import annotations

import os

from geko_state import datafiles

__all__ = ["data_columns", "guess_fields"]

_SCHEMA_ROWS = 1_000  # JSONL / CSV: column names and types from the first rows, not the whole file


def data_columns(path: str | os.PathLike, what: str = "dataset file") -> list[str]:
    """Column names of a dataset file (any suffix of :data:`geko_state.datafiles.DATA_FORMATS`);
    InputError for a missing file, an unsupported suffix or a file that cannot be read."""
    return datafiles.data_columns(path, what, _SCHEMA_ROWS)


# Common column names per role, most likely first.
_ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "prompt_field": ("prompt", "instruction", "question", "input", "query"),
    "response_field": ("response", "output", "answer", "completion", "target"),
    "text_field": ("text", "sentence", "content", "document"),
    "label_field": ("label", "labels", "class", "category"),
    "messages_field": ("messages", "conversations", "conversation", "chat"),
}


def guess_fields(columns: list[str]) -> dict[str, str | None]:
    """A first guess of the field options from the column names: a conversations column (chat
    fine-tuning), else prompt + response when both are found (causal LM fine-tuning), else text
    (+ label: classification), else nothing."""
    lower = {c.lower(): c for c in columns}

    def find(role: str) -> str | None:
        return next((lower[n] for n in _ROLE_NAMES[role] if n in lower), None)

    none = {"prompt_field": None, "response_field": None, "text_field": None, "label_field": None,
            "messages_field": None}
    messages = find("messages_field")
    if messages:  # a chat dataset (TRL's format): its conversations are what to train on
        return {**none, "messages_field": messages}
    prompt, response = find("prompt_field"), find("response_field")
    if prompt and response:
        return {**none, "prompt_field": prompt, "response_field": response}
    return {**none, "text_field": find("text_field"),
            "label_field": find("label_field") if find("text_field") else None}
