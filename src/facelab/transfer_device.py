"""Where transfer training computes: the torch device, the CPU cores it may use, intra-op threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from facelab.config import Device
from facelab.threads import available_cpus

if TYPE_CHECKING:
    import torch

__all__ = ["available_cpus", "load_best_weights", "resolve_device"]


def resolve_device(requested: Device | str) -> tuple[torch.device, str]:
    """The torch device to use and a sentence saying which and why; errors if CUDA is asked but absent."""
    import torch

    requested = Device(requested)
    has_cuda = torch.cuda.is_available()
    if requested is Device.CUDA and not has_cuda:
        raise RuntimeError(
            "--device cuda: no CUDA device is visible to torch "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu"
        )
    if requested is Device.CPU or not has_cuda:
        why = "as asked" if requested is Device.CPU else "no CUDA device found"
        return torch.device("cpu"), f"cpu ({why})"
    return torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"


def load_best_weights(run_dir: Path, device: str = "auto") -> tuple[torch.device, dict[str, torch.Tensor]]:
    """The device a finished run's network loads onto (``auto``: CUDA when torch sees one) and the
    weights it kept (``best.safetensors``); FileNotFoundError naming the run when there are none."""
    import torch
    from safetensors.torch import load_file

    chosen = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    path = Path(run_dir) / "best.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no best.safetensors (the run never finished an epoch)")
    return chosen, load_file(str(path))


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads. A linear head on cached features is a few tiny matrix
    products, where synchronising threads costs more than the work (measured: 4 ms per epoch on
    one thread, 300 ms on two when the machine is busy)."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
