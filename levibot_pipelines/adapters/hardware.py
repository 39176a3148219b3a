"""What this machine can do: the CPU's flags (``/proc/cpuinfo``), whether the GPU supports bf16,
the Transformer precision they lead to (``core.models.precision.choose_precision``, with its
matmul probe run only where it decides) and the seed profile's measured throughput
(``core.models.profile_choice``).

Measurements are kept per machine under ``$LEVIBOT_HOME/hardware/`` (one JSON file per
measurement and machine: host name, CPU model and flags, torch version and thread count,
hashed), written once by the first process that measures and read by every later one. So the
training steps, the publisher and the API of one machine all decide alike, and the decision
does not change with how busy the machine was when a process started. Delete the files to
measure again (e.g. after moving the home to another machine of the same name).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from levibot_pipelines.core.models.precision import (
    BF16_FLAGS,
    choose_precision,
    matmul_probe,
    native_bf16,
)
from levibot_pipelines.core.models.profile_choice import Throughput, seed_throughput

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
HARDWARE_DIR = "hardware"  # under LEVIBOT_HOME


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


def cpu_model(path: Path = CPUINFO) -> str:
    """The first ``model name`` of ``path``; ``platform.processor()`` where there is none."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor()


@functools.cache
def machine_key() -> str:
    """16 hex digits naming this machine as its measurements depend on it: host name, CPU
    model and flags, torch version and torch's CPU threads."""
    parts = [platform.node(), cpu_model(), cpu_flags(), torch.__version__]
    parts.append(str(torch.get_num_threads()))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def measured(
    home: Path | str | None, name: str, measure: Callable[[], dict], keys: tuple[str, ...]
) -> dict:
    """The JSON object ``measure()`` returns for ``name`` on this machine (numbers under
    ``keys``): read from
    ``$LEVIBOT_HOME/hardware/{name}-{machine_key()}.json`` when a process measured it before,
    else measured now and kept there (the first writer wins: a process that loses the race
    returns the kept value, so every process of a machine gets the same). ``home`` None:
    measured each time, kept nowhere; a home where nothing can be written (a read-only API
    host): measured and returned, not kept (logged). A kept file that is unreadable, or lacks
    a positive number under one of ``keys``, is measured again and replaced (logged, naming
    it)."""
    if home is None:
        return measure()
    folder = Path(home) / HARDWARE_DIR
    path = folder / f"{name}-{machine_key()}.json"
    kept = _read_kept(path, keys)
    if kept is not None:
        return kept
    value = measure()
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"machine": machine_summary(), **value}, indent=1))
    except OSError as exc:  # a read-only home (e.g. an API host): use it, keep nothing
        log.warning("cannot keep the measurement %s in %s (%s)", name, folder, exc)
        return value
    try:
        os.link(tmp, path)  # fails when another process kept its value first
    except FileExistsError:
        kept = _read_kept(path, keys)
        if kept is None:  # the kept file is unreadable: replace it
            os.replace(tmp, path)
            return value
        return kept
    finally:
        tmp.unlink(missing_ok=True)
    log.info("measured %s on this machine, kept in %s: %s", name, path, value)
    return value


def machine_summary() -> dict:
    """What ``machine_key`` hashes, readable (kept with each measurement)."""
    return {
        "host": platform.node(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _read_kept(path: Path, keys: tuple[str, ...]) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # not measured yet, or no home to keep it
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("unreadable measurement %s (%s): measuring again", path, exc)
        return None
    bad = [k for k in keys if not _positive(doc.get(k))] if isinstance(doc, dict) else ["*"]
    if bad:
        log.warning(
            "unusable measurement %s (not a positive number: %s): measuring again", path, bad
        )
        return None
    doc.pop("machine", None)
    return doc


def _positive(value: object) -> bool:
    """A finite positive number (not a bool)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def _probe() -> dict:
    fp32_s, bf16_s = matmul_probe()
    return {"fp32_s": fp32_s, "bf16_s": bf16_s}


@functools.cache
def resolve_precision(setting: str, device_type: str, home: Path | str | None = None) -> str:
    """``"fp32"`` or ``"bf16"`` for ``setting`` (``LEVIBOT_PRECISION``: auto, bf16, fp32) on
    ``device_type`` (``"cpu"`` or ``"cuda"``); decided once per process and arguments, logged
    with its inputs. The matmul probe (``auto`` on a CPU with bf16 instructions) is kept per
    machine under ``home`` (``measured``)."""
    flags, probe_s, cuda_bf16 = "", None, False
    if setting == "auto" and device_type == "cpu":
        flags = cpu_flags()
        if native_bf16(flags):
            probe = measured(home, "matmul_probe", _probe, ("fp32_s", "bf16_s"))
            probe_s = (float(probe["fp32_s"]), float(probe["bf16_s"]))
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


@functools.cache
def seed_rates(precision: str, home: Path | str | None = None) -> Throughput:
    """The seed profile's ``Throughput`` on this CPU in ``precision``, measured once per machine
    and kept under ``home`` (``measured``; about 2-4 s to measure)."""

    def measure() -> dict:
        speed = seed_throughput(precision)
        return {
            "train_windows_per_s": speed.train_windows_per_s,
            "forward_rows_per_s": speed.forward_rows_per_s,
        }

    keys = ("train_windows_per_s", "forward_rows_per_s")
    doc = measured(home, f"seed_throughput_{precision}", measure, keys)
    return Throughput(float(doc["train_windows_per_s"]), float(doc["forward_rows_per_s"]))
