"""The running-sum task builder: generated in code, 40-50 digits, targets the running sums mod 10
(checked with a plain loop), splits disjoint."""

from flax_s2s.data import pipeline, tasks


class TinyRunningSum(tasks.RunningSum):
    """The same generator with small splits, so that it prepares in a second."""

    SPLIT_SIZES = {"test": 20, "validation": 20, "train": 300}


def _running_sum(digits: str) -> str:
    total, out = 0, []
    for digit in digits:
        total = (total + int(digit)) % 10
        out.append(str(total))
    return "".join(out)


def test_running_sum_splits_are_disjoint_running_sums_of_40_to_50_digits(tmp_path):
    assert tasks.TASKS["running_sum"] is tasks.RunningSum
    builder = TinyRunningSum(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    splits = {name: pipeline.read_split(builder, name) for name in TinyRunningSum.SPLIT_SIZES}
    sources = {name: {src for src, _ in pairs} for name, pairs in splits.items()}
    lengths = set()
    for name, pairs in splits.items():
        assert len(pairs) == TinyRunningSum.SPLIT_SIZES[name] == len(sources[name])
        for src, tgt in pairs:
            assert tgt == _running_sum(src) and len(tgt) == len(src)
            assert 40 <= len(src) <= 50 and src.isdigit()
            assert tasks.RunningSum.split_of(src) == name
            lengths.add(len(src))
    assert len(lengths) > 5, "lengths vary"
    assert not sources["train"] & sources["test"]
    assert not sources["train"] & sources["validation"]
    assert not sources["validation"] & sources["test"]
