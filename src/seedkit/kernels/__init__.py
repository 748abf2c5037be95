"""Fused kernels for the hot paths: temperature pooling and the KL consistency loss.

:func:`seedkit.temperature_pool` and the KL distance of
:class:`seedkit.ConsistencyLoss` call these automatically. The backend is
chosen per call from the tensor's device and the process-wide setting:

- ``"auto"`` (default): the Triton kernels for CUDA tensors when ``triton``
  imports (``pip install seedkit[triton]``), else the ``torch.compile``-fused
  path (compiled on first use, once per process), else the reference path;
- ``"reference"``: the plain autograd composition (softmax, multiply, sum);
- ``"fused"`` / ``"triton"``: force one implementation.

Set it with :func:`set_backend`, the :func:`use_backend` context manager, or the
environment variable ``SEEDKIT_KERNELS=reference`` (read at import).
"""

from seedkit.kernels._compiled import compile_seconds, compiled_available
from seedkit.kernels._dispatch import (
    BACKENDS,
    get_backend,
    resolve_backend,
    set_backend,
    triton_available,
    use_backend,
)
from seedkit.kernels.fused import fused_kl_consistency, fused_temperature_pool

__all__ = [
    "BACKENDS",
    "compile_seconds",
    "compiled_available",
    "fused_kl_consistency",
    "fused_temperature_pool",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "triton_available",
    "use_backend",
]
