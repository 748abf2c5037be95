"""Fused kernels for the hot paths: temperature pooling and the KL consistency loss.

:func:`seedkit.temperature_pool`, the generation loss and the KL distance of
:class:`seedkit.ConsistencyLoss` call these. The backend is chosen once per call
(:func:`resolve_backend`) from the tensor's device and the setting in force:

- ``"auto"`` (default): the Triton kernels for CUDA tensors when ``triton``
  imports (``pip install "seedkit-wsss[triton]"``) and their self-check passed there;
  the ``"eager"`` path otherwise. ``"auto"`` never compiles anything: its first
  call costs what every call costs;
- ``"reference"``: the plain autograd composition (softmax, multiply, sum);
- ``"eager"``: fused autograd functions in eager torch ops (no compilation,
  about 0.3x the reference's extra memory, and faster than it at the default
  ``"std"`` scale on the CPU: see the Performance page);
- ``"fused"``: the ``torch.compile``-fused path on any device (C++/OpenMP loops
  on the CPU), compiled at its first call in each process (seconds to tens of
  seconds), the fastest on the CPU afterwards;
- ``"triton"``: the hand-written Triton kernels.

Set it with :func:`set_backend` (process-wide), the :func:`use_backend` context
manager (this thread or task), or the environment variable
``SEEDKIT_KERNELS=reference`` (read at the first call that needs it; a bad
value is an error naming the variable there, never at ``import seedkit``).
Under ``torch.compile`` every backend is the reference composition, which the
compiler fuses itself. The Performance page of the docs gives the first-call
and steady-state cost of each.
"""

from seedkit.kernels._compiled import compile_seconds, compiled_available
from seedkit.kernels._dispatch import (
    AUTO_MIN_NUMEL,
    BACKENDS,
    get_backend,
    register_self_check,
    resolve_backend,
    self_check,
    self_check_results,
    set_backend,
    triton_available,
    use_backend,
)
from seedkit.kernels._selfcheck import run_self_check
from seedkit.kernels.fused import fused_kl_consistency, fused_temperature_pool, kl_rows, pool_rows

register_self_check(run_self_check)

__all__ = [
    "AUTO_MIN_NUMEL",
    "BACKENDS",
    "compile_seconds",
    "compiled_available",
    "fused_kl_consistency",
    "fused_temperature_pool",
    "get_backend",
    "kl_rows",
    "pool_rows",
    "resolve_backend",
    "self_check",
    "self_check_results",
    "set_backend",
    "triton_available",
    "use_backend",
]
