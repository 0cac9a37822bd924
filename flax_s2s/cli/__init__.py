"""The commands, one module each (absl flags are global to a process, and the commands share
flag names such as --workdir, so each defines its flags only when it runs):

- `train`: `python train.py` / `flax-s2s-train`, the training loop of `flax_s2s.training`;
- `decode`: text lines through a trained workdir (`flax_s2s.infer`);
- `evaluate`: WER/PER of a workdir (or an ensemble) on a lexicon, or its text metrics on a split
  (`flax_s2s.evaluate`);
- `score`: the log-probability of given outputs (`flax_s2s.score`, also `python -m flax_s2s.score`);
- `export`: a workdir's decoders as one jax.export file (`flax_s2s.export`);
- `export_pretrained`: a fine-tuned run back to a save_pretrained directory (`flax_s2s.pretrained`);
- `report`: a run's plots and report (`flax_s2s.report`);
- `distill`: a teacher's beam outputs for a split, as a student's training data (`flax_s2s.distill`,
  also `python -m flax_s2s.distill`).
Each runs as `python -m flax_s2s.cli.NAME` and as the console script `flax-s2s-NAME`; the former
`python -m flax_s2s.infer` (and `.decode`), `.evaluate`, `.export`, `.pretrained` and `.report`
still run, as aliases that say where the command went.
"""
