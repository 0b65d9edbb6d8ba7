"""Read WordNet 3.0's noun synsets from the Debian package ``wordnet-base``: pure parsing, no torch.

A line of ``data.noun`` reads ``offset lex_filenum ss_type w_cnt word lex_id ... | gloss``
(wndb(5WN)); ``w_cnt`` is two hex digits. ``lex_filenum`` indexes the lexicographer files
(lexnames(5WN)), which the Debian package does not ship as a file, so :data:`LEXNAMES` lists them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LEXNAMES", "WORDNET_DIR", "Synset", "noun_synsets", "parse_line"]

WORDNET_DIR = Path("/usr/share/wordnet")

# lexnames(5WN), in file-number order.
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)


@dataclass(frozen=True)
class Synset:
    """One synset: its byte offset (WordNet's id), lexicographer file, words, and gloss split into
    the definition and the quoted examples."""

    offset: int
    lexname: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


def parse_line(line: str) -> Synset | None:
    """A ``data.*`` line as a :class:`Synset`; None for the license header (lines start with two spaces)."""
    if line.startswith("  ") or not line.strip():
        return None
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    n_words = int(fields[3], 16)
    # Words come as (word, lex_id) pairs; multi-word lemmas use '_', adjectives may carry "(a)" markers.
    words = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(n_words))
    parts = [p.strip() for p in gloss.strip().split(";")]
    definition = parts[0]
    examples = tuple(p.strip('"') for p in parts[1:] if p.startswith('"'))
    # Definitions may continue after the first ';' (a second clause that is not an example).
    more = [p for p in parts[1:] if p and not p.startswith('"')]
    if more:
        definition = "; ".join([definition, *more])
    return Synset(int(fields[0]), LEXNAMES[int(fields[1])], words, definition, examples)


def noun_synsets(directory: str | os.PathLike | None = None) -> list[Synset]:
    """Every noun synset of ``data.noun`` in file order (82,115 in WordNet 3.0)."""
    from .resources import wordnet_file

    path = wordnet_file("data.noun", directory)
    with open(path, encoding="utf-8") as f:
        return [s for s in map(parse_line, f) if s is not None]
