"""Datasets (TFDS builders generated in code or read from local files), vocabularies, batches."""
