"""The matmul of every dense layer of the Transformer family and T5 (`DENSE`, Flax's
`dot_general` argument): products accumulated in float32 and rounded once to the compute dtype,
the dot run as one 2D matmul (in bfloat16 with a backward pass of its own), in the forms XLA:CPU
runs fastest.

On an Intel Xeon (one core, 2026-12-07): a weight gradient contracted over [batch, length] at
once made XLA:CPU copy the output gradient into a transposed layout and run a slow
transposed-operand dot (3-4x the time of the forward's dot); a 2D dot over all rows runs at the
forward's rate. In bfloat16, autodiff of a dot with a float32 result ran the backward's dots in
float32; here they take bfloat16 operands with float32 accumulation, the bf16 matrix units' form
(XLA:CPU still converts the weight gradients' operands to float32: a dot contracting rows runs in
Eigen, which has no bf16 kernel).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _dot(lhs: Array, rhs: Array, lhs_dim: int, rhs_dim: int, dtype: Any) -> Array:
    """lhs contracted with rhs over one dimension each, in float32, rounded once to `dtype`."""
    numbers = (((lhs_dim,), (rhs_dim,)), ((), ()))
    return jax.lax.dot_general(lhs, rhs, numbers, preferred_element_type=jnp.float32).astype(dtype)


@jax.custom_vjp
def matmul(x: Array, w: Array) -> Array:
    """x [M, K] @ w [K, N] -> [M, N] in x's dtype, accumulated in float32."""
    return _dot(x, w, 1, 0, x.dtype)


def _matmul_fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
    return matmul(x, w), (x, w)


def _matmul_bwd(residuals: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    """dx = dy w^T and dw = x^T dy, both 2D dots over row-major operands, accumulated in float32
    with dy in the operands' dtype (exact: dy is the cotangent of a result in that dtype). dw is
    computed with its longer side as columns (a [N, K] product transposed when K > N), the
    orientation XLA:CPU's dot runs 1.3-1.5x faster."""
    x, w = residuals
    dy = dy.astype(x.dtype)
    dx = _dot(dy, w, 1, 1, x.dtype)
    if w.shape[0] <= w.shape[1]:
        dw = _dot(x, dy, 0, 0, w.dtype)
    else:  # the barrier keeps XLA from folding the transpose back into the dot
        dw = jax.lax.optimization_barrier(_dot(dy, x, 0, 0, w.dtype)).T
    return dx, dw


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def as_matmul(lhs: Array, rhs: Array, dimension_numbers: Any) -> tuple | None:
    """(lhs [M, K], rhs [K, N] or [N, K], the index of rhs's contracted dimension, the result's
    shape) for a dot_general with no batch dimensions whose lhs contracts its trailing dims and
    rhs its leading or trailing dims, in order, beyond 2D on either side (flattened, with the
    same products and sums); None for any other dot (left as it is)."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    n = len(lhs_contract)
    lhs_contract = tuple(d % lhs.ndim for d in lhs_contract)
    rhs_contract = tuple(d % rhs.ndim for d in rhs_contract)
    free_lhs, free_rhs = lhs.ndim - n, rhs.ndim - n
    if (lhs_batch or rhs_batch or not n or free_lhs < 1 or free_rhs < 1
            or lhs_contract != tuple(range(free_lhs, lhs.ndim))
            or (lhs.ndim == 2 and rhs.ndim == 2)):
        return None
    k = int(np.prod(lhs.shape[free_lhs:]))
    if rhs_contract == tuple(range(n)):
        return lhs.reshape(-1, k), rhs.reshape(k, -1), 0, lhs.shape[:free_lhs] + rhs.shape[n:]
    if rhs_contract == tuple(range(free_rhs, rhs.ndim)):
        return lhs.reshape(-1, k), rhs.reshape(-1, k), 1, lhs.shape[:free_lhs] + rhs.shape[:free_rhs]
    return None


def float32_accumulation(
    lhs: Array, rhs: Array, dimension_numbers: Any, precision: Any = None,
    preferred_element_type: Any = None,
) -> Array:
    """`lax.dot_general` for the dense layers: products accumulate into a float32 result, rounded
    once to the operands' dtype. In bfloat16 that is the form XLA:CPU runs on its bf16 matrix
    units (AMX, AVX-512 BF16), 3.5-8x faster there than a dot with a bfloat16 result.

    A dense layer's dot (`as_matmul`: lhs [..., K] by a kernel [K, ...]) runs as one 2D dot
    between reshapes; in bfloat16 (operands of one dtype, default precision) as the 2D `matmul`
    with its own backward pass. Float32 keeps autodiff's backward (the custom one measured
    1.01-1.03x there) so that remat policies that save dots (`dots_with_no_batch_dims_saveable`)
    still see these: a custom_vjp hides its dot from them, and under such a policy bfloat16's
    dense dots are recomputed. Anything else is lax.dot_general as given."""
    dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    flat = as_matmul(lhs, rhs, dimension_numbers)
    if flat is None:
        out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                  preferred_element_type=jnp.float32)
        return out.astype(dtype)
    lhs2, rhs2, rhs_dim, out_shape = flat
    if rhs_dim == 0 and precision is None and lhs.dtype == rhs.dtype != jnp.float32:
        return matmul(lhs2, rhs2).reshape(out_shape).astype(dtype)
    out = jax.lax.dot_general(lhs2, rhs2, (((1,), (rhs_dim,)), ((), ())), precision=precision,
                              preferred_element_type=jnp.float32)
    return out.reshape(out_shape).astype(dtype)


# The matmul of every dense layer
DENSE = {"dot_general": float32_accumulation}
