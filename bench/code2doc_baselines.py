"""Baselines of the code -> first docstring sentence task (`bench/code2doc.py`), scored as a
trained model is: ROUGE-1/2/L/Lsum F1 x 100, mean over the split's unique sources, each scored
against all its references (the best per ROUGE type).

    python bench/code2doc.py                        # writes data/code2doc
    python bench/code2doc_baselines.py [--data data/code2doc] [--max_k 20]

- identifiers, first k words: the identifiers of the code in order (Python's tokenizer: names
  that are not keywords, `self` and `cls` left out), split at "_" and at lower-to-upper case
  changes ("getHTTPResponse_code" -> get http response code), lowercased; the prediction is the
  first k of those words. Two variants: the function body's identifiers only (after the
  signature's ":"), and the whole function's (decorators, name and parameters first). k is the
  one of 1..max_k with the best mean ROUGE-L on validation.
- TF-IDF nearest: the target of the training function whose code is nearest by cosine of TF-IDF
  vectors (raw counts times ln((1 + N) / (1 + df)) + 1, rows scaled to length 1; the words as
  above, the whole function's) to the code; ties go to the first training function. Written
  here over scipy.sparse where SciPy is installed, else over dicts (same result; the output says
  which).

ROUGE is the library's `rouge` (flax_s2s/metrics.py, what training evals use) where it exists, else
rouge-score called directly with the same scorer (`RougeScorer(types, use_stemmer=True)`) on the
texts as they are: rouge1/2/L are the same either way, rougeLsum can differ only where a text
holds more than one sentence (the output says which was used).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import io
import json
import keyword
import math
import os
import re
import sys
import tokenize
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project

import common  # noqa: E402

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
LEFT_OUT = {"self", "cls"}
WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def split_identifier(name: str) -> list[str]:
    """"getHTTPResponse_code2" -> ["get", "http", "response", "code", "2"]."""
    return [word.lower() for part in name.split("_") for word in WORD.findall(part)]


def identifier_words(source: str, body_only: bool = False) -> list[str]:
    """The words of the code's identifiers in order (see the module's docstring); `body_only`
    starts after the first ":" outside brackets that follows `def` (the signature's end)."""
    names, depth, in_body, seen_def = [], 0, not body_only, False
    try:
        for token in tokenize.generate_tokens(io.StringIO(source + "\n").readline):
            if token.type == tokenize.OP:
                depth += token.string in "([{"
                depth -= token.string in ")]}"
                if token.string == ":" and depth == 0 and seen_def:
                    in_body = True
            elif token.type == tokenize.NAME:
                seen_def |= token.string == "def"
                if in_body and not keyword.iskeyword(token.string) and token.string not in LEFT_OUT:
                    names.append(token.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a source cut short: the names read so far
    return [word for name in names for word in split_identifier(name)]


def read_split(data: Path, split: str) -> list[tuple[str, str]]:
    with open(data / f"{split}.jsonl", encoding="utf-8") as f:
        return [(record["source"], record["target"]) for record in map(json.loads, f)]


def grouped(pairs: list[tuple[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Unique sources in first-appearance order and the targets of each, as evaluation groups
    a split."""
    references: dict[str, list[str]] = {}
    for source, target in pairs:
        references.setdefault(source, []).append(target)
    return list(references), list(references.values())


def rouge_function():
    """(name, function(hypotheses, references) -> {type: F1 x 100})."""
    library = getattr(importlib.import_module("flax_s2s.metrics"), "rouge", None)
    if library is not None:
        return "rouge of flax_s2s/metrics.py", library
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)

    def rouge(hypotheses, references):
        totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        for hypothesis, refs in zip(hypotheses, references, strict=True):
            best = scorer.score_multi(refs, hypothesis)
            for name in ROUGE_TYPES:
                totals[name] += best[name].fmeasure
        return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}

    return "rouge_score.rouge_scorer (texts as they are)", rouge


def idf_weights(documents: list[list[str]]) -> dict[str, float]:
    """ln((1 + N) / (1 + df)) + 1 of each word of the documents."""
    df = Counter(word for words in documents for word in set(words))
    return {word: math.log((1 + len(documents)) / (1 + n)) + 1 for word, n in df.items()}


def unit_vector(words: list[str], idf: dict[str, float]) -> dict[str, float]:
    weights = {word: count * idf[word] for word, count in Counter(words).items() if word in idf}
    norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
    return {word: w / norm for word, w in weights.items()}


def nearest_dicts(train: list[list[str]], queries: list[list[str]]) -> list[int]:
    """Index of the nearest training document of each query (cosine of TF-IDF), over dicts and
    an inverted index; ties to the lowest index, a query sharing no word -> 0."""
    idf = idf_weights(train)
    index: dict[str, list[tuple[int, float]]] = {}
    for row, words in enumerate(train):
        for word, weight in unit_vector(words, idf).items():
            index.setdefault(word, []).append((row, weight))
    found = []
    for words in queries:
        scores: dict[int, float] = {}
        for word, weight in unit_vector(words, idf).items():
            for row, other in index[word]:
                scores[row] = scores.get(row, 0.0) + weight * other
        best = max(scores.values(), default=0.0)
        found.append(min((row for row, s in scores.items() if s == best), default=0))
    return found


def nearest_sparse(train: list[list[str]], queries: list[list[str]]) -> list[int]:
    """As `nearest_dicts`, with scipy.sparse matrices: [queries, words] @ [words, train]."""
    from scipy import sparse

    idf = idf_weights(train)
    column = {word: i for i, word in enumerate(sorted(idf))}

    def matrix(documents):
        rows, cols, values = [], [], []
        for row, words in enumerate(documents):
            for word, weight in unit_vector(words, idf).items():
                rows.append(row)
                cols.append(column[word])
                values.append(weight)
        return sparse.csr_matrix((values, (rows, cols)), shape=(len(documents), len(column)))

    scores = (matrix(queries) @ matrix(train).T).toarray()
    # the lowest index among scores equal to the row's best up to rounding (the dict path adds
    # the same products in another order)
    best = scores.max(1, keepdims=True)
    return [int(i) for i in np.argmax(scores >= best - 1e-12, axis=1)]


def nearest(train: list[list[str]], queries: list[list[str]]) -> tuple[str, list[int]]:
    try:
        importlib.import_module("scipy.sparse")
    except ImportError:
        return "dicts", nearest_dicts(train, queries)
    return "scipy.sparse", nearest_sparse(train, queries)


def first_k(sources: list[str], k: int, body_only: bool) -> list[str]:
    return [" ".join(identifier_words(source, body_only)[:k]) for source in sources]


def baselines(data: Path, max_k: int) -> tuple[list[list], list[str]]:
    """Rows [baseline, k, rouge1, rouge2, rougeL, rougeLsum] on test, and notes."""
    rouge_name, rouge = rouge_function()
    train = read_split(data, "train")
    (val_sources, val_refs), (test_sources, test_refs) = (grouped(read_split(data, s))
                                                          for s in ("validation", "test"))
    rows = []
    for label, body_only in (("identifiers, first k words (body)", True),
                             ("identifiers, first k words (whole function)", False)):
        by_k = {k: rouge(first_k(val_sources, k, body_only), val_refs)["rougeL"]
                for k in range(1, max_k + 1)}
        k = max(by_k, key=lambda k: (by_k[k], -k))
        scores = rouge(first_k(test_sources, k, body_only), test_refs)
        rows.append([label, k, *(scores[t] for t in ROUGE_TYPES)])
    how, found = nearest([identifier_words(s) for s, _ in train],
                         [identifier_words(s) for s in test_sources])
    scores = rouge([train[i][1] for i in found], test_refs)
    rows.append(["TF-IDF nearest training function's target", "", *(scores[t] for t in ROUGE_TYPES)])
    notes = [f"- ROUGE: {rouge_name}; TF-IDF over {how}",
             f"- Test: {len(test_sources)} unique sources ({sum(map(len, test_refs))} examples); "
             f"k chosen on validation ({len(val_sources)} unique sources) by ROUGE-L, 1..{max_k}"]
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "data" / "code2doc"))
    parser.add_argument("--max_k", type=int, default=20)
    args = parser.parse_args()
    data = Path(args.data)
    meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
    rows, notes = baselines(data, args.max_k)
    lines = [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {common.cpu_model()}",
        f"- Data: Python {meta['python']}'s standard library, examples {meta['examples']}, "
        f"test file sha256 {meta['file_sha256']['test.jsonl'][:16]}",
        f"- Versions: Python {sys.version.split()[0]}, "
        + common.versions(("rouge-score", "nltk", "numpy", "scipy")),
        *notes,
        "",
        *common.table(["baseline (test)", "k", *ROUGE_TYPES], rows),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
