"""How many CPU threads each numeric library may use in this process.

By default every library (onnxruntime, OpenCV, PyTorch) starts one thread per core. That is right
for one process doing one photo at a time, and wrong for a pool of worker processes: N workers ×
N threads fight over N cores and run slower than N workers × 1 thread. A worker calls
:func:`limit_threads` before it loads a model; sessions made afterwards follow it.

Tuning: ``FACELAB_THREADS`` (environment) sets the per-process thread count for onnxruntime
sessions that facelab creates; 0 or unset leaves each library's default.
"""

from __future__ import annotations

import os
import sys
from typing import Any

ENV = "FACELAB_THREADS"


def cpu_threads() -> int:
    """Threads a library may use in this process; 0 means the library's own default."""
    try:
        return max(0, int(os.environ.get(ENV, "0")))
    except ValueError:
        return 0


def available_cpus() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def limit_threads(count: int) -> None:
    """Make this process use ``count`` threads in onnxruntime (sessions made from now on), OpenCV,
    PyTorch and OpenMP/BLAS libraries loaded from now on."""
    count = max(1, int(count))
    os.environ[ENV] = str(count)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(count)
    import cv2

    cv2.setNumThreads(count)
    # PyTorch only where it is loaded already (a CNN model): importing it costs ~2 s, and a torch
    # imported later reads OMP_NUM_THREADS, set above.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)


def ort_session_options() -> Any:
    """onnxruntime ``SessionOptions`` honouring :func:`cpu_threads` (for every session facelab makes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = cpu_threads()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options
