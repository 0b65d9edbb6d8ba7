from collections import Counter

from geko_torch.frontier import LEXNAMES, noun_synsets, parse_line, wordnet_file

from .conftest import need

LINE = ("00005930 03 n 02 dwarf 0 midget 1 001 @ 00004475 n 0000 | a plant or animal that is atypically small; "
        "secondary clause; \"a dwarf tree\"; \"the dwarf was tiny\"  \n")


def test_a_synset_line_parses_into_words_definition_and_examples():
    s = parse_line(LINE)
    assert s.offset == 5930 and s.lexname == "noun.Tops" == LEXNAMES[3]
    assert s.words == ("dwarf", "midget")
    assert s.definition == "a plant or animal that is atypically small; secondary clause"
    assert s.examples == ("a dwarf tree", "the dwarf was tiny")


def test_the_license_header_is_not_a_synset():
    assert parse_line("  1 This software and database is being provided\n") is None


def test_wordnet_nouns_have_26_lexicographer_files():
    need(lambda: wordnet_file("data.noun"))
    synsets = noun_synsets()
    assert len(synsets) == 82115
    counts = Counter(s.lexname for s in synsets)
    assert len(counts) == 26 and all(name.startswith("noun.") for name in counts)
    assert counts.most_common(1)[0] == ("noun.artifact", 11587)
