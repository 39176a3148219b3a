"""What this machine can do, read once per process: the CPU's flags (``/proc/cpuinfo``), whether
the GPU supports bf16, and the Transformer precision they lead to
(``core.models.precision.choose_precision``, with its matmul probe run only where it decides)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from levibot_pipelines.core.models.precision import (
    BF16_FLAGS,
    choose_precision,
    matmul_probe,
    native_bf16,
)

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(path: Path = CPUINFO) -> str:
    """The first ``flags`` line of ``path`` (Linux's ``/proc/cpuinfo``), the flags
    space-separated; ``""`` where the file is missing or has no such line (macOS, Windows)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return value.strip()
    return ""


@functools.cache
def resolve_precision(setting: str, device_type: str) -> str:
    """``"fp32"`` or ``"bf16"`` for ``setting`` (``LEVIBOT_PRECISION``: auto, bf16, fp32) on
    ``device_type`` (``"cpu"`` or ``"cuda"``); decided once per process and argument pair (the
    probe runs at most once), logged with its inputs."""
    flags, probe_s, cuda_bf16 = "", None, False
    if setting == "auto" and device_type == "cpu":
        flags = cpu_flags()
        probe_s = matmul_probe() if native_bf16(flags) else None
    if setting == "auto" and device_type == "cuda":
        cuda_bf16 = torch.cuda.is_bf16_supported()
    precision = choose_precision(
        setting, device_type=device_type, cuda_bf16=cuda_bf16, cpu_flags=flags, probe_s=probe_s
    )
    found = [f for f in flags.split() if f in BF16_FLAGS]
    log.info(
        "precision %s (setting %s, device %s, bf16 flags %s, probe fp32/bf16 s %s)",
        precision,
        setting,
        device_type,
        found,
        probe_s,
    )
    return precision
