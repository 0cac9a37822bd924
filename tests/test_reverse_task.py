"""The reverse task builder: generated in code, targets reversed, splits disjoint."""

import string

from flax_s2s.data import pipeline, tasks


class TinyReverse(tasks.Reverse):
    """The same generator with small splits, so that it prepares in a second."""

    SPLIT_SIZES = {"test": 30, "validation": 30, "train": 600}


def test_reverse_splits_are_disjoint_reversals_of_short_lowercase_strings(tmp_path):
    assert tasks.TASKS["reverse"] is tasks.Reverse
    builder = TinyReverse(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    splits = {name: pipeline.read_split(builder, name) for name in TinyReverse.SPLIT_SIZES}
    sources = {name: {src for src, _ in pairs} for name, pairs in splits.items()}
    for name, pairs in splits.items():
        assert len(pairs) == TinyReverse.SPLIT_SIZES[name] == len(sources[name])  # no repeats
        for src, tgt in pairs:
            assert tgt == src[::-1]
            assert 1 <= len(src) <= 12 and set(src) <= set(string.ascii_lowercase)
            assert tasks.Reverse.split_of(src) == name  # a string's split is a function of it
    assert not sources["train"] & sources["test"]
    assert not sources["train"] & sources["validation"]
    assert not sources["validation"] & sources["test"]
