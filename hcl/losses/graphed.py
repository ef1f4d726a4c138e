"""A loss replayed as a CUDA graph: one capture per input shape, then two launches per step.

At the batch sizes of contrastive training the paper-mode losses on a GPU cost their kernel
launches, not their arithmetic (see :mod:`hcl.losses.dense`). A CUDA graph records the forward
and backward kernels once and replays them, so a step pays one launch for each.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["CUDAGraphLoss"]


class CUDAGraphLoss(nn.Module):
    """Wrap ``loss(features, labels)`` so that CUDA calls replay a captured graph.

    The first call with a new (shape, dtype, device) of the inputs captures the loss's forward
    and backward (``torch.cuda.make_graphed_callables``, a few warm-up runs); later calls copy
    the inputs into the graph's buffers and replay it. Anything else calls the loss directly:
    CPU inputs, calls without gradients, more than ``max_graphs`` shapes, and losses that cannot
    be captured (host syncs, such as the grouped CPU kernel, reference mode or
    ``check_inputs=True``; a warning says so once per shape).

    The graph keeps its intermediate tensors for good: for the dense form a few (L, N, N)
    tensors per shape. The returned loss lives in the graph's output buffer; read it (or use it
    in ``backward``) before the next call.

    Args:
        loss: a module called as ``loss(features, labels)`` returning a scalar tensor.
        max_graphs: how many input shapes to capture at most.

    Shape:
        features: (B, V, D) floating; labels: (B, L) integers. Returns a scalar.
    """

    def __init__(self, loss: nn.Module, max_graphs: int = 4) -> None:
        super().__init__()
        self.loss = loss
        self.max_graphs = max_graphs
        self._graphs: dict[tuple, Any] = {}
        self._uncapturable: set[tuple] = set()

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not (features.is_cuda and isinstance(labels, torch.Tensor) and labels.is_cuda):
            return self.loss(features, labels)
        if not (torch.is_grad_enabled() and features.requires_grad):
            return self.loss(features, labels)
        key = (tuple(features.shape), features.dtype, features.device, tuple(labels.shape), labels.dtype)
        graphed = self._graphs.get(key)
        if graphed is None:
            if key in self._uncapturable or len(self._graphs) >= self.max_graphs:
                return self.loss(features, labels)
            graphed = self._capture(key, features, labels)
            if graphed is None:
                return self.loss(features, labels)
        return graphed(features, labels)

    def _capture(self, key: tuple, features: torch.Tensor, labels: torch.Tensor) -> Any:
        sample = (features.detach().clone().requires_grad_(), labels.clone())

        def run(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            # A plain function: make_graphed_callables would patch a module's own forward.
            return self.loss(features, labels)

        options = {}
        if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
            options["capture_error_mode"] = "thread_local"  # leave the loader's pinning thread alone
        try:
            graphed = torch.cuda.make_graphed_callables(run, sample, **options)
        except RuntimeError as error:  # an operation that cannot be captured, e.g. a host sync
            torch.cuda.synchronize(features.device)
            self._uncapturable.add(key)
            warnings.warn(
                f"{type(self.loss).__name__} cannot be captured as a CUDA graph for features of shape "
                f"{tuple(features.shape)} ({error}); calling it directly",
                stacklevel=3,
            )
            return None
        self._graphs[key] = graphed
        return graphed

    def extra_repr(self) -> str:
        return f"max_graphs={self.max_graphs}, captured={len(self._graphs)}"
