"""Export a trained workdir's greedy and beam-search decoders, weights included, to one file.

```
python -m flax_s2s.cli.export --workdir runs/addition --out addition.s2s [--batch_size 64] [--beam 4]
```
Both functions are serialised with `jax.export` (StableHLO) for one batch size, the workdir's
`max_src_len` and `max_tgt_len`, and the beam width; the parameters are constants inside them.
The file is a zip archive:
- `greedy.stablehlo`: (src_tokens int32 [batch, src_len], min_len int32 []) -> (tokens
  [batch, max_len], lengths [batch], scores [batch]), as `decoding.greedy`;
- `beam_search.stablehlo`: (src_tokens, alpha float32 [], min_len int32 []) -> tokens
  [batch, beam, max_len], lengths and scores [batch, beam], as `decoding.beam_search`;
- `meta.json`: the shapes, special token ids, the config's length penalty and the vocabularies'
  kinds; `src_vocab.*`, `tgt_vocab.*`: the vocabularies as the workdir holds them.

`flax_s2s.exported.ExportedDecoder` runs such a file with jax alone: no model code, no config.
Writing and reading the file need the `flatbuffers` package (jax.export's serialisation, a
dependency of flax_s2s).
"""

from __future__ import annotations

import json
import pathlib
import zipfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flax_s2s import decoding, lora
from flax_s2s.data.vocab import SentencePieceVocab, SymbolVocab, Vocab
from flax_s2s.outputs import check_output, writing_file
from flax_s2s.workdirs import TrainedModel

FORMAT_VERSION = 1


def export_functions(
    trained: TrainedModel, batch_size: int, beam_size: int,
    platforms: Sequence[str] | None = None,
) -> dict[str, jax.export.Exported]:
    """{"greedy": ..., "beam_search": ...}: the jax.export of each decoder for src_tokens
    [batch_size, max_src_len], with the variables folded in as constants (LoRA factors, if
    any, merged into the weights)."""
    model, config = trained.model, trained.config
    variables = lora.merged_variables(trained.variables)
    max_len = config.max_tgt_len
    src = jax.ShapeDtypeStruct((batch_size, config.max_src_len), jnp.int32)
    integer, real = jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.float32)

    def greedy(src_tokens, min_len):
        return decoding.greedy(model, variables, src_tokens, max_len, min_len)

    def beam_search(src_tokens, alpha, min_len):
        return decoding.beam_search(model, variables, src_tokens, beam_size, max_len, alpha,
                                    min_len)

    export = jax.export.export
    return {
        "greedy": export(jax.jit(greedy), platforms=platforms)(src, integer),
        "beam_search": export(jax.jit(beam_search), platforms=platforms)(src, real, integer),
    }


def require_serialization() -> None:
    """ImportError with the fix when jax.export cannot serialise here (no flatbuffers)."""
    try:
        import flatbuffers  # noqa: F401 - jax.export's serialisation imports it
    except ImportError:
        raise ImportError("writing or reading an export file needs the flatbuffers package, "
                          "which jax.export serialises with: pip install flatbuffers") from None


def _vocab_entry(vocab: Vocab) -> tuple[str, bytes]:
    """(file suffix and kind, bytes) of a vocabulary, as the workdir stores it."""
    if isinstance(vocab, SentencePieceVocab):
        return "sentencepiece", vocab.model_proto
    if not isinstance(vocab, SymbolVocab):
        raise ValueError(f"a {type(vocab).__name__} cannot be exported yet (symbol and SentencePiece "
                         "vocabularies can); a fine-tuned BART goes back to its own layout with "
                         "python -m flax_s2s.cli.export_pretrained")
    return "symbols", json.dumps(vocab.to_dict(), ensure_ascii=False).encode("utf-8")


def is_export_file(path: pathlib.Path) -> bool:
    """Whether `path` is an export file (a zip archive holding meta.json): what `--overwrite`
    may replace."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "meta.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def check_out(out: str, overwrite: bool = False, protected: Sequence[str] = ()) -> None:
    """OutputError when `out` may not be written (`flax_s2s.outputs.check_output`): an existing
    path is replaced only with `overwrite` and when it is an export file."""
    check_output(out, directory=False, overwrite=overwrite, ours=is_export_file,
                 protected=protected)


def export_trained(trained: TrainedModel, out: str, batch_size: int = 64, beam_size: int = 4,
                   platforms: Sequence[str] | None = None, overwrite: bool = False,
                   protected: Sequence[str] = ()) -> None:
    """Writes the export file of `trained` (see the module docstring) to `out`, beside itself
    and renamed into place; an existing `out` is replaced only with `overwrite` and when it is
    an export file, never when it is one of `protected` (`flax_s2s.outputs`)."""
    check_out(out, overwrite, protected)
    if batch_size <= 0:
        raise ValueError(f"--batch_size={batch_size}: must be > 0")
    if beam_size <= 0:
        raise ValueError(f"--beam={beam_size}: must be > 0")
    require_serialization()
    functions = export_functions(trained, batch_size, beam_size, platforms)
    specials = trained.tgt_vocab.special_tokens
    vocabs = {"src_vocab": _vocab_entry(trained.src_vocab),
              "tgt_vocab": _vocab_entry(trained.tgt_vocab)}
    meta = {
        "format_version": FORMAT_VERSION,
        "batch_size": batch_size, "src_len": trained.config.max_src_len,
        "max_len": trained.config.max_tgt_len, "beam_size": beam_size,
        "alpha": trained.config.eval_length_alpha, "step": trained.step,
        "src_pad": trained.src_vocab.special_tokens.pad,
        "src_eos": bool(trained.config.vocab.get("src_eos", False)),  # sources end in EOS
        "special_tokens": {"pad": specials.pad, "bos": specials.bos, "eos": specials.eos,
                           "unk": specials.unk},
        "vocabs": {name: kind for name, (kind, _) in vocabs.items()},
    }
    with writing_file(out, overwrite=overwrite, ours=is_export_file,
                      protected=protected) as partial:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("meta.json", json.dumps(meta, indent=1))
            for name, function in functions.items():
                archive.writestr(f"{name}.stablehlo", bytes(function.serialize()))
            for name, (_, data) in vocabs.items():
                archive.writestr(name, data)


if __name__ == "__main__":  # the former command, kept as an alias
    import runpy
    import sys

    print("python -m flax_s2s.export is now python -m flax_s2s.cli.export", file=sys.stderr)
    runpy.run_module("flax_s2s.cli.export", run_name="__main__", alter_sys=True)
