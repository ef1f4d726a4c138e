"""A loss replayed as a CUDA graph: one capture per input shape, then two launches per step.

At the batch sizes of contrastive training the paper-mode losses on a GPU cost their kernel
launches, not their arithmetic (see :mod:`hcl.losses.dense`). A CUDA graph records the forward
and backward kernels once and replays them, so a step pays one launch for each.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from hcl.losses._checks import check_no_indices_tuple
from hcl.losses.dense import dense_fits
from hcl.losses.registry import spec_of

__all__ = ["CUDAGraphLoss"]


class CUDAGraphLoss(nn.Module):
    """Wrap ``loss(features, labels)`` so that CUDA calls replay a captured graph.

    The first call with a new (shape, dtype, device) of the inputs captures the loss's forward
    and backward (``torch.cuda.make_graphed_callables``, a few warm-up runs); later calls copy
    the inputs into the graph's buffers and replay it. Anything else calls the loss directly:
    CPU inputs, calls without gradients, more than ``max_graphs`` shapes, and losses that would
    wait for the GPU while capturing, which a capture cannot survive cleanly: only modules of
    a loss that the loss table marks ``graph_capturable`` (:mod:`hcl.losses.registry`: hcl's
    paper-mode losses), with ``check_inputs=False`` and in paper mode, whose dense form fits
    (:func:`hcl.losses.dense.dense_fits`) are captured.

    The graph keeps its intermediate tensors for good: for the dense form a few (L, N, N)
    tensors per shape. The returned loss lives in the graph's output buffer; read it (or use it
    in ``backward``) before the next call.

    Args:
        loss: a module called as ``loss(features, labels)`` returning a scalar tensor.
        max_graphs: how many input shapes to capture at most.

    Attributes:
        last_level_terms: the wrapped loss's per-level terms of the last call (its own
            ``last_level_terms``, replayed with the graph), or None when it has none. Like the
            loss, a replayed one lives in the graph's buffer until the next call.
        captured: how many input shapes have a captured graph (read-only).

    Shape:
        features: (B, V, D) floating; labels: (B, L) integers. Returns a scalar.
    """

    def __init__(self, loss: nn.Module, max_graphs: int = 4) -> None:
        super().__init__()
        self.loss = loss
        self.max_graphs = max_graphs
        self._graphs: dict[tuple, Any] = {}
        self.last_level_terms: torch.Tensor | None = None

    def forward(self, features: torch.Tensor, labels: torch.Tensor, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self.loss).__name__)
        graphed = self._graph_for(features, labels)
        if graphed is None:
            loss = self.loss(features, labels)
            self.last_level_terms = getattr(self.loss, "last_level_terms", None)
            return loss
        outputs = graphed(features, labels)
        if isinstance(outputs, tuple):
            loss, terms = outputs
            self.last_level_terms = terms.detach()
            return loss
        self.last_level_terms = None
        return outputs

    def _graph_for(self, features: torch.Tensor, labels: torch.Tensor) -> Any:
        """The graph to replay for these inputs (captured now if need be), or None to call the
        loss directly."""
        if not (features.is_cuda and isinstance(labels, torch.Tensor) and labels.is_cuda):
            return None
        if not (torch.is_grad_enabled() and features.requires_grad):
            return None
        key = (tuple(features.shape), features.dtype, features.device, tuple(labels.shape), labels.dtype)
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= self.max_graphs or not self._capturable(features, labels):
                return None
            graphed = self._capture(features, labels)
            self._graphs[key] = graphed
        return graphed

    def _capturable(self, features: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether the loss runs without host syncs: a loss the table marks capturable, unchecked,
        in paper mode, whose dense form fits."""
        spec = spec_of(self.loss)
        if spec is None or not spec.graph_capturable or getattr(self.loss, "check_inputs", False):
            return False
        if getattr(self.loss, "mode", "paper") != "paper":
            return False
        num_views = features.shape[0] * (features.shape[1] if features.dim() == 3 else 1)
        num_levels = labels.shape[1] if labels.dim() == 2 else 1
        return dense_fits(num_views, num_levels, features.device)

    def _capture(self, features: torch.Tensor, labels: torch.Tensor) -> Any:
        sample = (features.detach().clone().requires_grad_(), labels.clone())

        def run(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            # A plain function: make_graphed_callables would patch a module's own forward. The
            # per-level terms are a second output, so that replays refresh them too.
            loss = self.loss(features, labels)
            terms = getattr(self.loss, "last_level_terms", None)
            return loss if terms is None else (loss, terms)

        options = {}
        if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
            options["capture_error_mode"] = "thread_local"  # leave the loader's pinning thread alone
        return torch.cuda.make_graphed_callables(run, sample, **options)

    @property
    def captured(self) -> int:
        """How many input shapes have a captured graph (0 while every call ran the loss directly)."""
        return len(self._graphs)

    def extra_repr(self) -> str:
        return f"max_graphs={self.max_graphs}, captured={self.captured}"
