"""L2 normalisation of embedding rows that neither overflows nor underflows, at any float scale.

``x / |x|`` squares the entries: in float32 a row with norm above ~1.8e19 overflows to an infinite
norm (and normalises to zero), one below ~1e-19 underflows to a zero norm (and normalises to
``x / eps``), so the loss of ``f * c`` silently differed from the loss of ``f``. Each row is first
multiplied by a power of two that brings its largest magnitude into [0.5, 1). A power-of-two
scaling is exact and commutes with the rounding of squares, sums and square roots, so wherever the
plain formula was finite the result is the same to the bit, and elsewhere it is the true direction.

An all-zero row stays as :func:`torch.nn.functional.normalize` leaves it: the zero vector, with
norm ``eps`` (its gradient is the incoming gradient divided by ``eps``).
"""

from __future__ import annotations

import torch

__all__ = ["NORM_EPS", "scaled_to_unit_max", "unit_rows", "unit_rows_and_norms"]

# As torch.nn.functional.normalize: x / max(|x|, eps), which now only matters for a zero row.
NORM_EPS = 1e-12


def _power_of_two(exponent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``2**exponent``, built from its bits: exact on every device, and no host sync or new
    host tensor (so it can run inside a CUDA graph). Needs a normal float32 (float64) exponent."""
    if dtype == torch.float64:
        return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32).to(dtype)


def _powers_of_two(exponent: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``2**a`` and ``2**b`` with ``a + b = exponent`` and both halves small enough to be finite in
    ``dtype`` (a float32 exponent spans -148..128, past float32's largest power of two)."""
    low = torch.div(exponent, 2, rounding_mode="floor")
    return _power_of_two(low, dtype), _power_of_two(exponent - low, dtype)


def scaled_to_unit_max(x: torch.Tensor, per_row: bool = True) -> torch.Tensor:
    """``x`` times the power of two that brings its largest magnitude into [0.5, 1), exactly
    (a zero stays zero): one power per row, or one for the whole tensor.

    For quantities that do not depend on the scale of ``x`` (directions, correlations), but whose
    squares would overflow or underflow on the way.

    Shape:
        x: (N, D). Returns (N, D).
    """
    largest = x.detach().abs().amax(dim=1, keepdim=True) if per_row else x.detach().abs().amax()
    low, high = _powers_of_two(-torch.frexp(largest).exponent, x.dtype)
    return x * low * high


def unit_rows_and_norms(x: torch.Tensor, eps: float = NORM_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``x`` scaled to unit length, and their lengths, safe from overflow and underflow.

    Args:
        x: finite rows (any float dtype).
        eps: the length given to an all-zero row (whose unit row is zero).

    Shape:
        x: (N, D). Returns ``z``, (N, D), and ``norm``, (N,), with ``x = norm * z`` up to rounding;
        ``norm`` is finite wherever ``|x|`` is (so up to float max, not just its square root).
    """
    _, exponent = torch.frexp(x.detach().abs().amax(dim=1, keepdim=True))
    low, high = _powers_of_two(-exponent, x.dtype)
    scaled = x * low * high
    scaled_norm = torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp(min=eps)
    low, high = _powers_of_two(exponent, x.dtype)
    return scaled / scaled_norm, (scaled_norm * low * high).squeeze(1)


def unit_rows(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """:func:`torch.nn.functional.normalize` over ``dim=1``, safe from overflow and underflow.

    Shape:
        x: (N, D). Returns (N, D).
    """
    return unit_rows_and_norms(x, eps)[0]
