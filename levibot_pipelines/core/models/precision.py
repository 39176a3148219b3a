"""The numeric precision the Transformer trains and samples in: fp32, or bf16 autocast where the
hardware makes bf16 matmuls fast. Decided once per process (``adapters.hardware``
``resolve_precision`` gathers the inputs), never assumed from the kind of machine:

- ``LEVIBOT_PRECISION=fp32`` or ``bf16``: that, whatever the machine (bf16 on a CPU without
  bf16 instructions is emulated and slow, but correct).
- ``auto`` on CUDA: bf16 when the GPU supports it (``torch.cuda.is_bf16_supported()``).
- ``auto`` on a CPU: bf16 only when the CPU has a bf16 dot-product instruction (``amx_bf16``:
  Intel AMX tiles; ``avx512_bf16``: AVX-512 BF16, on recent Xeons and AMD Zen 4/5) *and* a
  short matmul probe (``matmul_probe``: 512^3 in each dtype, a few ms) measures bf16 at least
  ``MIN_SPEEDUP`` times as fast as fp32. Without such an instruction bf16 is converted in
  software (about a fifth of fp32's speed), so no probe is run.

Under bf16 autocast the linear layers and attention run in bf16; LayerNorm statistics, the
residual stream (fp32 + bf16 -> fp32), the heads' outputs (cast back to fp32), the loss and the
optimiser's weights stay fp32.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")  # the setting's values
BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags
MIN_SPEEDUP = 1.5  # bf16 matmul must beat fp32 by this factor in the probe


def check_precision(precision: str) -> str:
    """``precision`` if it is a resolved one (``"fp32"`` or ``"bf16"``), else ``ValueError``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return precision


def native_bf16(cpu_flags: str) -> bool:
    """Whether a ``/proc/cpuinfo`` flags string (space-separated) names a bf16 dot-product
    instruction (``BF16_FLAGS``)."""
    return any(flag in BF16_FLAGS for flag in cpu_flags.split())


def choose_precision(
    setting: str,
    *,
    device_type: str,
    cuda_bf16: bool = False,
    cpu_flags: str = "",
    probe_s: tuple[float, float] | None = None,
) -> str:
    """The precision to run in: ``"fp32"`` or ``"bf16"`` (rules in the module docstring).

    Args:
        setting: ``"auto"``, ``"bf16"`` or ``"fp32"`` (``LEVIBOT_PRECISION``).
        device_type: ``"cpu"`` or ``"cuda"``.
        cuda_bf16: the GPU supports bf16 (CUDA only).
        cpu_flags: the CPU's flags, space-separated (CPU only).
        probe_s: ``(fp32_seconds, bf16_seconds)`` of ``matmul_probe``; needed when ``setting``
            is ``auto`` on a CPU that ``native_bf16`` accepts, ignored otherwise.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"precision setting must be one of {list(PRECISIONS)}, got {setting!r}")
    if setting != "auto":
        return setting
    if device_type == "cuda":
        return "bf16" if cuda_bf16 else "fp32"
    if device_type != "cpu":
        raise ValueError(f"device_type must be 'cpu' or 'cuda', got {device_type!r}")
    if not native_bf16(cpu_flags):
        return "fp32"
    if probe_s is None:
        raise ValueError(f"the CPU has {BF16_FLAGS}: choose_precision needs the matmul probe_s")
    fp32_s, bf16_s = probe_s
    if not (fp32_s > 0 and bf16_s > 0):
        raise ValueError(f"probe_s must be two positive durations, got {probe_s}")
    return "bf16" if fp32_s / bf16_s >= MIN_SPEEDUP else "fp32"


def matmul_probe(n: int = 512, repeats: int = 5) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of an ``n x n`` by ``n x n`` CPU matmul in fp32 and in bf16
    (interleaved, after one warm-up each): ``(fp32_s, bf16_s)``. About 15 ms at the defaults."""
    a = torch.randn(n, n)
    pairs = {torch.float32: (a, a.T.contiguous()), torch.bfloat16: (a.bfloat16(), a.T.bfloat16())}
    best = {dtype: float("inf") for dtype in pairs}
    for i in range(repeats + 1):
        for dtype, (x, y) in pairs.items():
            t0 = time.perf_counter()
            x @ y
            if i:  # the first round warms up
                best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return best[torch.float32], best[torch.bfloat16]


def autocast(precision: str, device_type: str) -> AbstractContextManager:
    """The context a forward pass runs in: bf16 autocast on ``device_type`` for ``"bf16"``, a
    no-op for ``"fp32"``."""
    if check_precision(precision) == "fp32":
        return nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)
