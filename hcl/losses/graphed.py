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

from hcl.losses.dense import dense_fits
from hcl.losses.hierarchical import HiConE, HiMulCon, HiMulConE
from hcl.losses.supcon import SupConLoss

__all__ = ["CUDAGraphLoss"]


class CUDAGraphLoss(nn.Module):
    """Wrap ``loss(features, labels)`` so that CUDA calls replay a captured graph.

    The first call with a new (shape, dtype, device) of the inputs captures the loss's forward
    and backward (``torch.cuda.make_graphed_callables``, a few warm-up runs); later calls copy
    the inputs into the graph's buffers and replay it. Anything else calls the loss directly:
    CPU inputs, calls without gradients, more than ``max_graphs`` shapes, and losses that would
    wait for the GPU while capturing, which a capture cannot survive cleanly: only hcl's
    paper-mode losses with ``check_inputs=False`` whose dense form fits
    (:func:`hcl.losses.dense.dense_fits`) are captured.

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

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not (features.is_cuda and isinstance(labels, torch.Tensor) and labels.is_cuda):
            return self.loss(features, labels)
        if not (torch.is_grad_enabled() and features.requires_grad):
            return self.loss(features, labels)
        key = (tuple(features.shape), features.dtype, features.device, tuple(labels.shape), labels.dtype)
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= self.max_graphs or not self._capturable(features, labels):
                return self.loss(features, labels)
            graphed = self._capture(features, labels)
            self._graphs[key] = graphed
        return graphed(features, labels)

    def _capturable(self, features: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether the loss runs without host syncs: hcl's dense paper-mode form, unchecked."""
        if not isinstance(self.loss, (SupConLoss, HiMulCon, HiConE, HiMulConE)) or self.loss.check_inputs:
            return False
        if getattr(self.loss, "mode", "paper") != "paper":
            return False
        num_views = features.shape[0] * (features.shape[1] if features.dim() == 3 else 1)
        num_levels = labels.shape[1] if labels.dim() == 2 else 1
        return dense_fits(num_views, num_levels, features.device)

    def _capture(self, features: torch.Tensor, labels: torch.Tensor) -> Any:
        sample = (features.detach().clone().requires_grad_(), labels.clone())

        def run(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            # A plain function: make_graphed_callables would patch a module's own forward.
            return self.loss(features, labels)

        options = {}
        if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
            options["capture_error_mode"] = "thread_local"  # leave the loader's pinning thread alone
        return torch.cuda.make_graphed_callables(run, sample, **options)

    def extra_repr(self) -> str:
        return f"max_graphs={self.max_graphs}, captured={len(self._graphs)}"
