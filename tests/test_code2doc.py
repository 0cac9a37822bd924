"""bench/code2doc.py, the summarisation dataset built from the standard library, on a tiny fake
standard library: which files and functions it reads, the sources without their docstrings, the
first-sentence rule, splits disjoint by top-level name, and the same bytes from two builds; and
the pieces of its baselines (bench/code2doc_baselines.py): identifier words, TF-IDF nearest."""

import json
import math

import numpy as np
import pytest
from conftest import load_bench

code2doc, baselines = load_bench("code2doc"), load_bench("code2doc_baselines")


@pytest.mark.parametrize("docstring, expected", [
    ("Return the sum.", "Return the sum."),
    ("Return the sum.  More words here.", "Return the sum."),
    ("Return the\n    sum of x\n    and y.\n\n    Details.", "Return the sum of x and y."),
    ("Use a key, e.g. a name. Then more.", "Use a key, e.g. a name."),
    ("Compare (i.e. order) values etc. now. Rest.", "Compare (i.e. order) values etc. now."),
    ("Version 3.11 is newer. Rest", "Version 3.11 is newer."),
    ("Return a value\n>>> f()\n1", "Return a value"),
    ("No period at the end", "No period at the end"),
    ("  \n  ", ""),
])
def test_first_sentence(docstring, expected):
    assert code2doc.first_sentence(docstring) == expected


@pytest.mark.parametrize("target, problem", [
    ("Return the sum.", ""), ("Constructor.", "short"), ("", "short"),
    ("capwords(s [,sep]) -> string", "signature"), (">>> import io", "doctest"),
])
def test_target_problem(target, problem):
    assert code2doc.target_problem(target) == problem


ALPHA = '''\
import functools


def plain(x):
    """Return x plus one.

    More text.
    """
    y = x + 1
    return y


@functools.cache
def decorated(n):
    # a comment stays
    """Compute the thing. Second sentence."""
    return n


def one_liner(): """Do nothing at all."""


def semicolon(a): """Return a as is."""; return a


async def fetch(url):
    """Fetch the url now."""
    def inner():
        """Never an example of its own."""
        return url
    return inner()


def undocumented():
    return 1


def short():
    """Constructor."""


class Thing:
    def method(self):
        """Describe the method."""
        return self

    class Inner:
        def deep(self):
            """Go deeper still."""
            return 2
'''

EXPECTED_ALPHA = [
    ("def plain(x):\n    y = x + 1\n    return y", "Return x plus one."),
    ("@functools.cache\ndef decorated(n):\n    # a comment stays\n    return n", "Compute the thing."),
    ("def one_liner():", "Do nothing at all."),
    ("def semicolon(a): return a", "Return a as is."),
    ('async def fetch(url):\n    def inner():\n        """Never an example of its own."""\n'
     "        return url\n    return inner()", "Fetch the url now."),
    ("def method(self):\n    return self", "Describe the method."),
    ("def deep(self):\n    return 2", "Go deeper still."),
]

# top-level names -> one example each, so that every split gets some
UNITS = [f"mod{i}" for i in range(12)]


def fake_stdlib(root):
    (root / "pkg" / "tests").mkdir(parents=True)
    for folder in ("test", "site-packages", "tkinter"):
        (root / folder).mkdir()
    (root / "alpha.py").write_text(ALPHA)
    body = 'def {0}_f():\n    """Return the {0} value."""\n    return "{0}"\n'
    (root / "pkg" / "__init__.py").write_text(body.format("pkg"))
    (root / "pkg" / "sub.py").write_text(body.format("pkg_sub"))
    for name in UNITS:
        (root / f"{name}.py").write_text(body.format(name))
    for skipped in ("test/test_a.py", "pkg/tests/b.py", "test_c.py", "site-packages/d.py",
                    "tkinter/__init__.py"):
        (root / skipped).write_text(body.format("skipped"))
    (root / "broken.py").write_text('def broken(:\n    """Never read."""\n')
    (root / "latin.py").write_bytes(
        b'# -*- coding: latin-1 -*-\ndef latin():\n    """Return caf\xe9 now."""\n    return 1\n')


def test_build_reads_what_it_should_and_cuts_docstrings(tmp_path):
    fake_stdlib(tmp_path)
    data, facts = code2doc.build(tmp_path)
    pairs = {(r["source"], r["target"]) for split in data.values() for r in split}
    assert set(EXPECTED_ALPHA) <= pairs
    others = {(f'def {n}_f():\n    return "{n}"', f"Return the {n} value.")
              for n in ["pkg", "pkg_sub", *UNITS]}
    others.add(("def latin():\n    return 1", "Return café now."))
    assert pairs - set(EXPECTED_ALPHA) == others
    assert facts["skipped_files"] == {"test": 1, "separately packaged": 1, "unparsable": 1}
    assert facts["dropped_examples"] == {"short": 1}
    with_tkinter, _ = code2doc.build(tmp_path, all_packages=True)
    assert sum(map(len, with_tkinter.values())) == sum(map(len, data.values())) + 1


def test_splits_are_disjoint_by_top_level_name_and_builds_are_identical(tmp_path):
    fake_stdlib(tmp_path / "lib")
    data, facts = code2doc.build(tmp_path / "lib")
    modules = facts["modules"]
    names = [m for split in code2doc.SPLITS for m in modules[split]]
    assert sorted(names) == sorted(["alpha", "pkg", "pkg.sub", "latin", *UNITS])
    split_of = {m: split for split in code2doc.SPLITS for m in modules[split]}
    assert split_of["pkg"] == split_of["pkg.sub"]
    assert all(modules[split] for split in code2doc.SPLITS)
    for split in code2doc.SPLITS:  # each example comes from a module of its split
        for record in data[split]:
            name = record["source"].split("def ", 1)[1].split("_f(")[0].split("(")[0]
            module = {"pkg_sub": "pkg.sub"}.get(name, name)
            if module in split_of:
                assert split_of[module] == split, (module, split)
    metas = [code2doc.write(*code2doc.build(tmp_path / "lib"), tmp_path / out, False)
             for out in ("a", "b")]
    assert metas[0] == metas[1]
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    lines = (tmp_path / "a" / "test.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == data["test"]


def test_duplicates_keep_the_train_copy(tmp_path):
    body = 'def same():\n    """Return the same thing."""\n    return 0\n'
    for name in UNITS:
        (tmp_path / f"{name}.py").write_text(body)
    data, facts = code2doc.build(tmp_path)
    assert [len(data[split]) for split in code2doc.SPLITS] == [1, 0, 0]
    assert facts["dropped_examples"] == {"duplicate": len(UNITS) - 1}


def test_identifier_words():
    assert baselines.split_identifier("getHTTPResponse_code2") == ["get", "http", "response", "code", "2"]
    source = "@cache\ndef read_all(self, maxBytes=(1, 2)):\n    return self.rawData[maxBytes:]"
    assert baselines.identifier_words(source) == ["cache", "read", "all", "max", "bytes", "raw",
                                                  "data", "max", "bytes"]
    assert baselines.identifier_words(source, body_only=True) == ["raw", "data", "max", "bytes"]


def test_tfidf_nearest_both_ways_equal_a_dense_reference():
    rng = np.random.default_rng(0)
    words = ["a", "b", "c", "d", "e", "f"]
    train = [list(rng.choice(words, rng.integers(1, 6))) for _ in range(30)]
    queries = [list(rng.choice(words, rng.integers(1, 4))) for _ in range(20)] + [["zzz"]]
    n = len(train)
    df = np.array([sum(w in doc for doc in train) for w in words])
    idf = np.log((1 + n) / (1 + df)) + 1

    def vector(doc):
        v = np.array([doc.count(w) for w in words]) * idf
        return v / (np.linalg.norm(v) or 1.0)

    scores = np.array([[vector(q) @ vector(d) for d in train] for q in queries])
    expected = [int(np.flatnonzero(np.isclose(row, row.max()))[0]) for row in scores]
    assert baselines.nearest_dicts(train, queries) == expected
    assert baselines.nearest_sparse(train, queries) == expected
    assert math.isclose(scores[-1].max(), 0.0) and expected[-1] == 0
