"""The Ray engine on a cluster started the way docs/scale.md says (``ray start --head``), joined the
two ways it gives: as a node's driver (``HOST:PORT``, Ray Data) and from outside through Ray Client
(``ray://HOST:PORT``, where Ray Data cannot run and Ray Core drives the same actors). Both must give
the local engine's index, row for row. A one-machine "cluster": the head alone, with 2 CPUs.

Ray >= 2.59 may start the head with token authentication; the engine presents the token that
``ray start`` left in ~/.ray/auth_token, as a user's driver on the head machine would need to.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from facelab.recognize import Recognizer

# Its fixtures and helpers (and its skips: without the detector and embedder, this module skips too).
from test_album_ray import (  # noqa: F401  (fixtures, used as arguments)
    CPUS,
    assert_same_index,
    index_copy,
    library,
    local_ws,
    recognizer,
    rows,
)
from tiny_model import TinyModel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, str]]:
    """``ray start --head`` on free ports; its addresses: ``gcs`` (a node's driver) and ``client``."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'facelab[ray]')")
    if ray.is_initialized():
        ray.shutdown()
    ray_cli = str(Path(sys.executable).parent / "ray")
    gcs, client, dashboard = free_port(), free_port(), free_port()
    started = subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={gcs}",
            f"--ray-client-server-port={client}",
            f"--dashboard-port={dashboard}",
            f"--num-cpus={CPUS}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    mode = os.environ.get("RAY_AUTH_MODE")
    try:
        yield {"gcs": f"127.0.0.1:{gcs}", "client": f"ray://127.0.0.1:{client}"}
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=180)
        # The engine may have set it (to present the head's token): leave the process as it was.
        if mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = mode


@pytest.mark.parametrize("how", ["gcs", "client", "no address"])
def test_a_cluster_joined_either_way_gives_the_local_index(
    how: str,
    ray_head: dict[str, str],
    tiny_model: TinyModel,
    library: Path,  # noqa: F811
    recognizer: Recognizer,  # noqa: F811
    local_ws: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """ "no address": ray.init() alone would join the cluster `ray start` left running on this machine
    (and refuse num_cpus); the engine starts a Ray of its own beside it instead."""
    import ray

    address = ray_head.get(how)
    ws_dir = index_copy(tiny_model, library, recognizer, tmp_path / "ws", "ray", CPUS, address)
    assert_same_index(local_ws, ws_dir)
    assert len(rows(ws_dir)) == 7
    assert not ray.is_initialized(), "the driver disconnects at the end (and stops a Ray it started)"
    # The cluster is still there to join.
    ray.init(address=ray_head["gcs"], log_to_driver=False)
    try:
        assert ray.cluster_resources().get("CPU") == CPUS
    finally:
        ray.shutdown()
