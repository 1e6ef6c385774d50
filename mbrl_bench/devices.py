"""The device a run computes on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

Every part of a run (networks, the ensemble, planners, model rollouts, replay buffers) is built
on one device by the composition root. Random numbers are always drawn from the run's CPU
generator and then moved (:func:`randn` and friends), so a run draws the same random numbers on
every device and CPU runs are exactly as they were before devices existed.
"""

from __future__ import annotations

import re

import torch

from mbrl_bench.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device(name: str, where: str = "--device") -> str:
    """``name`` if it is a device setting, else a one-line error."""
    if name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ConfigError(where, name, f"one of {DEVICE_CHOICES}")


def resolve_device(name: str, where: str = "--device") -> torch.device:
    """The torch device for a device setting: ``auto`` is the first visible GPU when there is
    one, else the CPU; a GPU asked for where there is none is a one-line error."""
    check_device(name, where)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        build = "a CPU build of torch" if torch.version.cuda is None else "no visible GPU"
        raise ConfigError(where, name, f"CUDA is not available here ({build}); use --device "
                          "cpu or auto")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(where, name, f"this machine shows {torch.cuda.device_count()} GPU(s)")
    return device


def describe(device: torch.device) -> dict[str, str]:
    """What ``run.json`` records about the device: its name and, for a GPU, the GPU's model."""
    info = {"device": str(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["gpu"] = torch.cuda.get_device_name(index)
    return info


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator,
          device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers drawn from ``generator`` (on its own device), on ``device``."""
    return torch.randn(shape, generator=generator, device=generator.device,
                       dtype=dtype).to(device)


def rand(shape: tuple[int, ...] | torch.Size, generator: torch.Generator,
         device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn from ``generator``, on ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator,
            device: torch.device) -> torch.Tensor:
    """Integers in [0, high) drawn from ``generator``, on ``device``."""
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device)


def randperm(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A permutation of 0..n-1 drawn from ``generator``, on ``device``."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def has_bf16_units(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: a GPU that supports bf16, or a
    CPU with AVX512-BF16 or AMX-BF16 (elsewhere torch emulates bf16 products, 10-20x slower
    than fp32 on the AMD EPYC (AVX2) of this project's machines)."""
    if device.type == "cuda":  # bf16 tensor cores from Ampere (compute capability 8) on
        return torch.cuda.get_device_capability(device)[0] >= 8
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
