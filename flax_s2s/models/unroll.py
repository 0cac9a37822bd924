"""How far to unroll a `lax.scan` over time steps: the RNN encoder's recurrences, the teacher-forced
decoder scan of `model.step`, and the scheduled-sampling unroll (`flax_s2s.forcing`).

Every caller reads `scan_unroll` through this module when it traces, so a benchmark can swap the
rule (`bench/scan_unroll.py`, `bench/g2p_step_paths.py`).
"""

# Scans over time (the encoder RNNs, the teacher-forced decoder scan, the scheduled-sampling scan
# of any model's `step`) unroll fully up to this many steps and run rolled beyond it. A recurrent
# step is a few small matmuls: rolled, each pays XLA's loop overhead and gets no fusion across
# steps (the default LSTM train step at length 8 runs about 1.4x faster fully unrolled). A partial
# unroll is the worst of both: at 12 steps an unroll of 8 (one iteration of 8, a remainder of 4)
# ran the G2P GRU step 1.5x slower than full unroll and slower than rolled. From 16 steps rolled
# is as fast as full unroll and compiles in constant time (full: 25 s at 16 steps, 60 s at 32).
# A Transformer's scheduled-sampling scan gains about 1.15x from full unroll at 8-12 steps and
# compiles 2-3x longer. Measured on CPU (XLA:CPU); `bench/scan_unroll.py`, bench/RESULTS.md.
FULL_UNROLL_MAX = 12


def scan_unroll(length: int) -> int:
    """Steps per loop iteration for a scan over `length` time steps: all of them, or one."""
    return length if length <= FULL_UNROLL_MAX else 1
