"""The machine a run lands on: which device, whether it computes bf16 natively, and so which
precision ``auto`` means here. Kept apart from the training loop, which only asks for the answers.
"""
from __future__ import annotations

import contextlib
import platform

import torch

from .config import ConfigError, RunConfig


def pick_device(name: str = "auto") -> torch.device:
    """CUDA if present, then Apple MPS, then CPU - unless a device is named."""
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for, but CUDA is not available here; use device auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} was asked for, but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not mps:
        raise ConfigError(f"device={name!r} was asked for, but Apple MPS is not available here; use device auto or cpu")
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for the device to finish its queued work (so a timing measures the work, not its launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _cpuinfo(key: str) -> str:
    """The first ``key`` line of /proc/cpuinfo (Linux), its value; "" elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), "")
    except OSError:
        return ""


def cpu_bf16_flags() -> list[str]:
    """The CPU's native-bf16 instruction sets (AVX-512 BF16, AMX); [] where /proc/cpuinfo does not say."""
    flags = set(_cpuinfo("flags").split())
    return [f for f in ("avx512_bf16", "amx_bf16") if f in flags]


def cpu_name() -> str:
    """This machine's processor, as figures measured on it should name it."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(``fp32`` or ``bf16``, why). ``auto`` picks bf16 only where the device computes it natively, fp32
    elsewhere (docs/performance.md, "bf16 where the hardware has it"); a forced ``bf16`` still runs."""
    if requested == "fp32":
        return "fp32", "fp32 as configured"
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        what = f"{torch.cuda.get_device_name(device)} {'has' if native else 'has no'} native bf16"
    elif device.type == "cpu":
        flags = cpu_bf16_flags()
        native = bool(flags)
        what = (f"this CPU has native bf16 ({', '.join(flags)})" if native else
                f"this CPU has no native bf16 (torch CPU capability {torch.backends.cpu.get_cpu_capability()})")
    else:
        native, what = False, f"no bf16 autocast on {device.type}"
    if requested == "bf16":
        return "bf16", f"bf16 as configured ({what})"
    return ("bf16" if native else "fp32"), f"auto: {what}"


def resolve_config(cfg: RunConfig) -> tuple[RunConfig, str]:
    """The config as it will run here - ``precision="auto"`` resolved for this machine's device - and why.
    Called where a run is planned, never by the loop: a record says ``fp32`` or ``bf16``, never ``auto``, so an
    auto run on a bf16 GPU and one on an fp32-only CPU are two runs (docs/statistics.md)."""
    device = pick_device(cfg.device)
    precision, why = resolve_precision(cfg.precision, device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision='bf16' is not supported on {device.type}; use precision fp32 or auto")
    return (cfg if precision == cfg.precision else cfg.replace(precision=precision)), why


def autocast(precision: str, device: torch.device):
    """bf16 autocast for the forward pass (weights, gradients and optimizer state stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
