"""A real local Ray cluster for the distributed tests: a head and a second node, one CPU
each, two raylets on loopback (``ray start``), or the cluster ``$LSR_RAY_ADDRESS`` names
(``.ci/run`` starts one). Without the ``distributed`` extra these tests skip."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_cluster(port: int) -> str:
    """``ray start --head`` plus a second ``ray start --address`` on this machine."""
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head = [str(RAY), "start", "--head", "--port", str(port), "--include-dashboard=false"]
    subprocess.run([*head, *common], check=True, capture_output=True, timeout=120)
    subprocess.run([str(RAY), "start", "--address", address, *common], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    return address


@pytest.fixture(scope="session")
def ray_address():
    pytest.importorskip("ray", reason="the distributed extra is not installed "
                        "(pip install 'lsr-engine[distributed]')")  # fmt: skip
    given = os.environ.get("LSR_RAY_ADDRESS")
    if given:
        yield given
        return
    if not RAY.exists() and shutil.which("ray") is None:
        pytest.skip("the ray command is not installed beside this Python")
    address = start_local_cluster(_free_port())
    try:
        yield address
    finally:
        import ray

        ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def ray_env(ray_address):
    """The environment for ``lsr`` subprocesses that join the cluster."""
    return {**os.environ, "RAY_ADDRESS": ray_address, "HF_HUB_OFFLINE": "1"}
