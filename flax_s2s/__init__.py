"""flax_s2s: autoregressive sequence-to-sequence models in JAX/Flax.

Teacher forcing (the decoder reads the gold previous token) is how these models train; autoregressive
decoding (it reads its own previous token) is how they run. flax_s2s makes the trade-off between the
two a schedule you choose and a gap you can measure.
"""

__version__ = "0.1.0"
