"""What a benchmark's figures depend on, in the line each benchmark prints first."""
from __future__ import annotations

import os

import torch

from cifarlab.hardware import cpu_name, resolve_precision


def device_summary(device: torch.device) -> str:
    """What a speed figure depends on: the processor or GPU, its bf16 support, threads, torch."""
    what = f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU {cpu_name()}"
    bf16 = resolve_precision("auto", device)[1].removeprefix("auto: ")
    return (f"{what}, {os.cpu_count()} CPU cores; {bf16}; torch {torch.__version__} (CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads")
