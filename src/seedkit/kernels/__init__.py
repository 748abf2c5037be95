"""Fused kernels for the hot paths: temperature pooling and the KL consistency loss.

:func:`seedkit.temperature_pool` and the KL distance of
:class:`seedkit.ConsistencyLoss` call these automatically. The backend is
chosen per call from the tensor's device and the process-wide setting:

- ``"auto"`` (default): the Triton kernels for CUDA tensors when ``triton``
  imports (``pip install "seedkit-wsss[triton]"``); the compiled fused path for CPU
  maps of at least ``AUTO_MIN_NUMEL_CPU`` elements (2-4x faster and 4-6x leaner
  than the reference there, see the Performance page); the reference path
  otherwise;
- ``"reference"``: the plain autograd composition (softmax, multiply, sum);
- ``"fused"``: the ``torch.compile``-fused path on any device (C++/OpenMP loops
  on the CPU), compiled on first use, once per process;
- ``"triton"``: the hand-written Triton kernels.

Set it with :func:`set_backend`, the :func:`use_backend` context manager, or the
environment variable ``SEEDKIT_KERNELS=reference`` (read at import).
"""

from seedkit.kernels._compiled import compile_seconds, compiled_available
from seedkit.kernels._dispatch import (
    AUTO_MIN_NUMEL,
    AUTO_MIN_NUMEL_CPU,
    BACKENDS,
    get_backend,
    resolve_backend,
    self_check,
    self_check_results,
    set_backend,
    triton_available,
    use_backend,
)
from seedkit.kernels.fused import fused_kl_consistency, fused_temperature_pool

__all__ = [
    "AUTO_MIN_NUMEL",
    "AUTO_MIN_NUMEL_CPU",
    "BACKENDS",
    "compile_seconds",
    "compiled_available",
    "fused_kl_consistency",
    "fused_temperature_pool",
    "get_backend",
    "resolve_backend",
    "self_check",
    "self_check_results",
    "set_backend",
    "triton_available",
    "use_backend",
]
