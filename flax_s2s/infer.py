"""Decode text with a trained workdir's newest readable checkpoint (or a chosen one, or a mean).

```
python -m flax_s2s.cli.decode --workdir runs/addition [--beam 4] [--alpha 0.6] [--input FILE]
                              [--batch_size 64] [--step S] [--average K] [--strict]
                              [--nbest N] [--format text|jsonl] [--min_len M] [--no_sort]
                              [--input_format auto|text|jsonl] [--prefix FILE]
                              [--prefix_field NAME] [--no_repeat_ngram_size N]
                              [--repetition_penalty P] [--max_len_a A] [--max_len_b B]
                              [--forced_bos TOKEN]
```
Reads one source per line from FILE (default: stdin), prints one output per line in input order.
The model, its config and its vocabularies all come from the workdir. Lines are decoded in padded
batches of one fixed shape, so the decoder compiles once; the batches are formed from sources of
similar length (longest first), which ends each batch's decoding loop sooner, and the outputs are
put back in input order (`--no_sort`: batches in input order, the same outputs).

`--nbest N` prints the N best beam hypotheses of every line, one per line as
`index<TAB>score<TAB>text` (index: the input line, counted from 0; score: log p over the length
penalty, with `--mbr` the mean utility); `--format jsonl` prints one JSON object per input line
with its hypotheses' texts, tokens, lengths and scores. `--min_len M` forbids EOS before M output
tokens. `--mbr N` decodes by minimum Bayes risk over N sampled candidates (or the beam's N-best,
`--mbr_source=beam`), printing the one with the highest mean `--mbr_utility` against the others
(`flax_s2s.mbr`).

`--input_format jsonl` (the default "auto" picks it for an --input ending in ".jsonl") reads a
JSON object per line, its source where training reads it (`flax_s2s.data.decode_input`): the
run's `src_field`, or its `context_field` list of turns joined by `turn_separator`, of which the
latest turns that fit max_src_len are kept; `--prefix_field NAME` takes each line's target prefix
from the row's NAME. A line that is not a JSON object or lacks a field is a bad line (below).

`--prefix FILE` (line-aligned with the input) gives each line a target prefix that its output
starts with; decoding continues after it, and the printed output and its score include it (an
empty prefix line: no prefix). `--no_repeat_ngram_size`, `--repetition_penalty`, `--max_len_a`
and `--max_len_b` are the generation controls of `flax_s2s.decoding` (docs/decoding.md);
`--forced_bos` the first token of every output (mBART's target language code; default: the
run's config.forced_bos).

A line that cannot be decoded (not valid UTF-8, empty, longer than the config's max_src_len, or
with a prefix that is not valid UTF-8 or not shorter than max_tgt_len) gets an empty output line
and a message on stderr naming its number, so the outputs stay aligned with the inputs and no
valid line is lost; the exit status is 0 unless no line at all could be decoded. `--strict`
makes the first such line an error instead. Symbols outside the source vocabulary are read as
<unk> and counted on stderr (an error under `--strict`). Lines end at LF, CRLF or CR, and a UTF-8
byte-order mark is ignored; `flax_s2s.input_lines` reads and checks the lines, as it does for the
score command and `ExportedDecoder`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tqdm

from flax_s2s import decoding, input_lines, mbr
from flax_s2s.data import decode_input
from flax_s2s.data.dialogue import Dialogue, join_turns
from flax_s2s.data.encoding import fit_source
from flax_s2s.data.vocab import SymbolVocab, Vocab, split_symbols
from flax_s2s.input_lines import InputError
from flax_s2s.workdirs import TrainedModel, WorkdirError, forced_controls, load_workdir

Line = decode_input.Line  # an input line's text (or Dialogue), or why it has none


def encode_lines(
    lines: Sequence[Line], vocab: Vocab, max_src_len: int, warn, strict: bool = False,
    src_eos: bool = False,
) -> list[list[int] | None]:
    """Token ids per line (`fit_source`: a Dialogue keeps its latest turns that fit), or None
    for a line that cannot be decoded, checked as every decoder checks its lines
    (`input_lines.encode_checked`: reported through `warn`; with `strict`, an InputError naming
    the line instead). Surrounding whitespace and a BOM are ignored; symbols outside `vocab`
    become UNK and are reported."""

    def encode(text: str | Dialogue) -> tuple[list[int], list[str]]:
        ids, cut_turns = fit_source(vocab, text, max_src_len, src_eos)
        if cut_turns:
            text = join_turns(text.turns[cut_turns:], text.separator)
        if not isinstance(vocab, SymbolVocab):  # only symbols and ids align one to one
            return ids, []
        unk = vocab.special_tokens.unk
        return ids, [s for s, i in zip(split_symbols(text, vocab.separator), ids, strict=False)
                     if i == unk]

    return input_lines.encode_checked(lines, encode, max_src_len, vocab.special_tokens.unk, warn,
                                      strict)


def encode_prefixes(
    prefixes: Sequence[Line], vocab: Vocab, max_tgt_len: int, warn, strict: bool = False,
) -> list[list[int] | None]:
    """Target token ids per prefix line ([] for an empty one: no prefix), or None for a prefix
    that cannot be used: not UTF-8, or not shorter than `max_tgt_len` (reported through `warn`;
    with `strict`, an InputError naming the line instead). Symbols outside `vocab` become UNK
    and are reported."""
    encoded: list[list[int] | None] = []
    for number, line in enumerate(prefixes, start=1):
        problem = None
        if isinstance(line, UnicodeDecodeError):
            problem = (f"prefix not valid UTF-8 (byte {line.object[line.start]:#04x} at offset "
                       f"{line.start})")
        else:
            text = input_lines.clean(line)
            ids = vocab.encode(text, add_eos=False) if text else []
            unknown = ids.count(vocab.special_tokens.unk)
            if unknown and strict:
                raise InputError(f"line {number}: {unknown} prefix symbol(s) outside the target "
                                 "vocabulary (--strict)")
            if unknown:
                warn(f"line {number}: {unknown} prefix symbol(s) outside the target vocabulary "
                     "read as <unk>")
            if len(ids) >= max_tgt_len:
                problem = (f"a prefix of {len(ids)} symbols leaves no room below the model's "
                           f"max_tgt_len={max_tgt_len}")
        if problem and strict:
            raise InputError(f"line {number}: {problem} (--strict)")
        if problem:
            warn(f"line {number}: {problem}; printing an empty line")
        encoded.append(None if problem else ids)
    return encoded


class Hypothesis(NamedTuple):
    """One decoded output of a line."""

    text: str
    tokens: list[int]  # the output ids up to and including EOS
    score: float  # greedy: log p; beam: log p / length penalty; -inf: no hypothesis


def length_sorted_batches(encoded: Sequence[list[int] | None], batch_size: int,
                          sort: bool = True) -> list[list[int]]:
    """The indices of the decodable lines (not None), cut into batches of at most `batch_size`:
    longest sources first when `sort` (stable: equal lengths keep input order), else in input
    order. Outputs grow with their sources, so a batch of similar lengths stops decoding when
    its few long rows would otherwise keep every short one waiting."""
    rows = [i for i, ids in enumerate(encoded) if ids is not None]
    if sort:
        rows.sort(key=lambda i: -len(encoded[i]))
    return [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]


def _source_batch(encoded: Sequence[list[int] | None], chunk: list[int], batch_size: int,
                  src_len: int, pad: int) -> np.ndarray:
    """src_tokens [batch_size, src_len] of the lines `chunk`; PAD rows fill up the last batch,
    so every batch has one shape and one compile serves all."""
    src_tokens = np.full((batch_size, src_len), pad, np.int32)
    for row, line_index in enumerate(chunk):
        src_tokens[row, : len(encoded[line_index])] = encoded[line_index]
    return src_tokens


def _prefix_batch(prefixes: Sequence[list[int] | None] | None, chunk: list[int],
                  batch_size: int, max_len: int, pad: int) -> np.ndarray | None:
    """The forced prefixes [batch_size, max_len] of the lines `chunk` (PAD after each), or None
    without prefixes."""
    if prefixes is None:
        return None
    prefix = np.full((batch_size, max_len), pad, np.int32)
    for row, line_index in enumerate(chunk):
        prefix[row, : len(prefixes[line_index])] = prefixes[line_index]
    return prefix


def _search(trained: TrainedModel, src_tokens: np.ndarray, beam_size: int, alpha: float,
            min_len: int, controls: dict, prefix: np.ndarray | None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tokens [batch, n, max_len], lengths [batch, n], scores [batch, n]: greedy's one
    hypothesis (n = 1) when beam_size is 0, else the beam's, best first; `controls`: the
    searches' keyword arguments (`GenerationControls.arguments`)."""
    max_len = trained.config.max_tgt_len
    if beam_size == 0:
        outputs = decoding.greedy(trained.model, trained.variables, src_tokens, max_len, min_len,
                                  prefix=prefix, **controls)
        return tuple(np.asarray(x)[:, None] for x in outputs)
    outputs = decoding.beam_search(trained.model, trained.variables, src_tokens, beam_size,
                                   max_len, alpha, min_len, prefix=prefix, **controls)
    return tuple(np.asarray(x) for x in outputs)


def _check_search(beam_size: int, nbest: int, mbr_settings: mbr.MBRSettings | None) -> None:
    """InputError naming the flag when the search asked for cannot give `nbest` hypotheses."""
    if mbr_settings is not None and beam_size:
        raise InputError(f"--beam={beam_size} with --mbr={mbr_settings.candidates}: choose one "
                         "(--mbr_source=beam takes the N-best of a beam of width --mbr)")
    most = mbr_settings.candidates if mbr_settings else max(beam_size, 1)
    if not 1 <= nbest <= most:
        raise InputError(f"--nbest={nbest}: must be between 1 and {most}, the hypotheses of "
                         + (f"--mbr={most}" if mbr_settings else
                            f"--beam={beam_size} (greedy decoding has one)"))


def _hypothesis(tgt_vocab: Vocab, tokens: np.ndarray, length: int, score: float) -> Hypothesis:
    """A decoded row (tokens [max_len]) as a Hypothesis; an empty slot of the beam (score -inf)
    as one with no text and no tokens."""
    if not np.isfinite(score):
        return Hypothesis("", [], float("-inf"))
    return Hypothesis(tgt_vocab.decode(tokens), tokens[:length].tolist(), float(score))


def decode_hypotheses(
    trained: TrainedModel,
    lines: Sequence[Line],
    beam_size: int = 0,
    nbest: int = 1,
    alpha: float = 0.6,
    min_len: int = 0,
    batch_size: int = 64,
    warn=lambda message: print(message, file=sys.stderr),
    strict: bool = False,
    sort: bool = True,
    progress: bool = False,
    mbr_settings: mbr.MBRSettings | None = None,
    controls: decoding.GenerationControls | None = None,
    prefixes: Sequence[Line] | None = None,
) -> list[list[Hypothesis]]:
    """The `nbest` best hypotheses of every input line, in input order ([] for a line that
    cannot be decoded). beam_size 0 decodes greedily (nbest must then be 1).

    `controls` are the generation controls of every search; `prefixes` (one per line, "" for
    none) the target text each output starts with (`encode_prefixes`); a hypothesis' text,
    tokens and score include its prefix.

    With `mbr_settings` (beam_size must be 0), the hypotheses are the MBR candidates ranked by
    their mean utility against the others, which is their score (`flax_s2s.mbr`).

    Batches hold sources of similar length unless `sort` is False; the outputs are the same
    either way. `progress` shows a progress bar on stderr. Raises InputError when there are
    lines but none can be decoded (or, with `strict`, at the first line that cannot).
    """
    _check_search(beam_size, nbest, mbr_settings)
    config, tgt_vocab = trained.config, trained.tgt_vocab
    encoded = encode_lines(lines, trained.src_vocab, config.max_src_len, warn, strict,
                           config.vocab.get("src_eos", False))
    prefix_ids = None
    if prefixes is not None:
        if len(prefixes) != len(lines):
            raise InputError(f"{len(prefixes)} prefix line(s) for {len(lines)} input line(s)")
        prefix_ids = encode_prefixes(prefixes, tgt_vocab, config.max_tgt_len, warn, strict)
        encoded = [None if p is None else ids for ids, p in zip(encoded, prefix_ids, strict=True)]
    arguments = controls.arguments() if controls is not None else {}
    batches = length_sorted_batches(encoded, batch_size, sort)
    if lines and not batches:
        raise InputError(f"none of the {len(lines)} input line(s) could be decoded")
    outputs: list[list[Hypothesis]] = [[] for _ in lines]
    pad = trained.src_vocab.special_tokens.pad
    bar = tqdm.tqdm(total=sum(map(len, batches)), unit="line", file=sys.stderr,
                    disable=not progress or len(batches) < 2)
    with bar:
        for chunk in batches:
            src_tokens = _source_batch(encoded, chunk, batch_size, config.max_src_len, pad)
            prefix = _prefix_batch(prefix_ids, chunk, batch_size, config.max_tgt_len,
                                   tgt_vocab.special_tokens.pad)
            if mbr_settings is None:
                tokens, lengths, scores = _search(trained, src_tokens, beam_size, alpha, min_len,
                                                  arguments, prefix)
                ranked = [(range(nbest), scores[row]) for row in range(len(chunk))]
            else:
                lines_of_rows = chunk + [0] * (batch_size - len(chunk))  # PAD rows: dropped
                tokens, lengths, scores = mbr.candidates(
                    trained.model, trained.variables, src_tokens, lines_of_rows,
                    config.max_tgt_len, mbr_settings, alpha, min_len, controls, prefix)
                ranked = [(order[:nbest], utilities) for order, utilities in mbr.pick(
                    tokens[: len(chunk)], scores[: len(chunk)], tgt_vocab, mbr_settings.utility)]
            for row, line_index in enumerate(chunk):
                order, row_scores = ranked[row]
                outputs[line_index] = [
                    _hypothesis(tgt_vocab, tokens[row, k], lengths[row, k], row_scores[rank])
                    for rank, k in enumerate(order)
                ]
            bar.update(len(chunk))
    return outputs


def decode_lines(
    trained: TrainedModel,
    lines: Sequence[Line],
    beam_size: int = 0,
    alpha: float = 0.6,
    batch_size: int = 64,
    warn=lambda message: print(message, file=sys.stderr),
    strict: bool = False,
    min_len: int = 0,
    sort: bool = True,
    controls: decoding.GenerationControls | None = None,
    prefixes: Sequence[Line] | None = None,
) -> list[str]:
    """One output text per input line, in order; "" for lines that cannot be decoded.

    beam_size 0 decodes greedily; beam_size >= 1 returns the best beam-search hypothesis. Raises
    InputError when there are lines but none can be decoded (or, with `strict`, at the first
    line that cannot).
    """
    hypotheses = decode_hypotheses(trained, lines, beam_size, 1, alpha, min_len, batch_size, warn,
                                   strict, sort, controls=controls, prefixes=prefixes)
    return [best[0].text if best else "" for best in hypotheses]


def format_tsv(index: int, hypotheses: Sequence[Hypothesis], nbest: int) -> list[str]:
    """`index<TAB>score<TAB>text` for each of the `nbest` hypotheses of input line `index`
    (0-based); a line without hypotheses (it could not be decoded) gets `nbest` lines of score
    -inf and empty text, so every input has its `nbest` lines."""
    padded = list(hypotheses) + [Hypothesis("", [], float("-inf"))] * (nbest - len(hypotheses))
    return [f"{index}\t{h.score:.4f}\t{h.text}" for h in padded[:nbest]]


def format_jsonl(index: int, hypotheses: Sequence[Hypothesis]) -> str:
    """One JSON object: the input line's `index` (0-based) and its hypotheses (text, tokens,
    length, score), best first; those that scored -inf (no hypothesis found) are left out."""
    found = [h for h in hypotheses if np.isfinite(h.score)]
    return json.dumps({"index": index, "hypotheses": [
        {"text": h.text, "tokens": h.tokens, "length": len(h.tokens), "score": h.score}
        for h in found
    ]}, ensure_ascii=False)


def format_outputs(hypotheses: Sequence[Sequence[Hypothesis]], nbest: int = 0,
                   output_format: str = "text") -> list[str]:
    """What the CLI prints, line by line. nbest 0 with format "text": the best output's text per
    input line ("" for a bad line); nbest >= 1: `format_tsv`; format "jsonl": `format_jsonl`."""
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"--format={output_format!r}: must be one of {OUTPUT_FORMATS}")
    if output_format == "jsonl":
        return [format_jsonl(i, h) for i, h in enumerate(hypotheses)]
    if nbest == 0:
        return [h[0].text if h else "" for h in hypotheses]
    return [row for i, h in enumerate(hypotheses) for row in format_tsv(i, h, nbest)]


OUTPUT_FORMATS = ("text", "jsonl")


read_lines = input_lines.read_lines  # the lines of a file or stdin (BOM, CRLF, bad UTF-8)


def decode_file(
    workdir: str, input_path: str | None = None, beam_size: int = 0, alpha: float = 0.6,
    batch_size: int = 64, step: int | None = None, average: int = 1, strict: bool = False,
    nbest: int = 0, output_format: str = "text", min_len: int = 0, sort: bool = True,
    progress: bool = False, mbr_settings: mbr.MBRSettings | None = None,
    raw_weights: bool = False, controls: decoding.GenerationControls | None = None,
    prefix_path: str | None = None, input_format: str = "auto", prefix_field: str | None = None,
    forced_bos: str = "",
) -> list[str]:
    """What the CLI prints, line by line (`format_outputs`): by default one output per line of
    `input_path` (default: stdin), in order; `prefix_path`: a file of target prefixes, one per
    input line. `input_format` "jsonl" (or "auto" and a ".jsonl" path) reads JSON lines
    (`decode_input.jsonl_sources`), with `prefix_field` the field of their prefixes;
    `forced_bos` the first token of every output (`workdirs.forced_controls`). Raises
    WorkdirError or InputError with a message naming the problem."""
    try:
        decoding.check_arguments(alpha=alpha)
        jsonl = decode_input.reads_jsonl(input_format, input_path)
    except ValueError as error:
        raise InputError(f"--{error}") from None
    if prefix_field is not None and (not jsonl or prefix_path is not None):
        raise InputError(f"--prefix_field={prefix_field!r}: needs JSON lines input "
                         "(--input_format=jsonl) and no --prefix file")
    if beam_size < 0:
        raise InputError(f"--beam={beam_size}: must be >= 0 (0: greedy)")
    if batch_size <= 0:
        raise InputError(f"--batch_size={batch_size}: must be > 0")
    if nbest < 0:
        raise InputError(f"--nbest={nbest}: must be >= 0 (0: the best output's text alone)")
    _check_search(beam_size, max(nbest, 1), mbr_settings)
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"--format={output_format!r}: must be one of {OUTPUT_FORMATS}")
    if min_len < 0:
        raise InputError(f"--min_len={min_len}: must be >= 0")
    if not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir!r} does not exist")
    # A file is read first, to fail fast; stdin only once the model is known to load.
    lines = None if input_path is None else read_lines(input_path)
    prefixes = None if prefix_path is None else read_lines(prefix_path, "--prefix")
    trained = load_workdir(workdir, step, average, raw_weights)
    controls = forced_controls(trained, controls, forced_bos)
    input_lines.check_min_len(min_len, trained.config.max_tgt_len, "--min_len")
    lines = read_lines(None) if lines is None else lines
    if jsonl:
        fields = decode_input.fields_of(trained.config)
        lines, field_prefixes = decode_input.jsonl_sources(lines, fields, prefix_field)
        prefixes = prefixes if field_prefixes is None else field_prefixes
    hypotheses = decode_hypotheses(trained, lines, beam_size, max(nbest, 1), alpha, min_len,
                                   batch_size, strict=strict, sort=sort, progress=progress,
                                   mbr_settings=mbr_settings, controls=controls,
                                   prefixes=prefixes)
    return format_outputs(hypotheses, nbest, output_format)


if __name__ == "__main__":  # the former command, kept as an alias
    import runpy
    import sys

    print("python -m flax_s2s.infer is now python -m flax_s2s.cli.decode", file=sys.stderr)
    runpy.run_module("flax_s2s.cli.decode", run_name="__main__", alter_sys=True)
