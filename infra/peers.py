"""Peer programs (other projects' model servers and clients) in their own virtual environments, for tests and
benchmarks that compare with or interoperate against them.

Each peer gets ``.venv-peers/<name>`` in the repository (git-ignored): created with pip on first use, reused after.
Their pins conflict with each other and with knflow's, so none is installed into knflow's environment.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

from infra.errors import Unavailable

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / ".venv-peers"
#: what each peer environment holds (pinned: their figures and behaviour are what knflow is compared with)
PEERS: dict[str, tuple[str, ...]] = {
    "mlserver": ("mlserver==1.7.1", "onnxruntime"),
    "kserve": ("kserve==0.21.0", "onnxruntime"),
    "tritonclient": ("tritonclient[http,grpc]==2.73.0",),
    "func-python": ("func-python==0.8.1",),
}
INSTALL_TIMEOUT_S = 900


def peer_python(name: str) -> Path:
    """The Python of peer ``name``'s environment, installing it first if needed; ``Unavailable`` says why not."""
    venv = PEERS_DIR / name
    python = venv / "bin" / "python"
    done = venv / ".installed"
    PEERS_DIR.mkdir(exist_ok=True)
    with (PEERS_DIR / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions installing one peer at once would break it
        if done.exists() and done.read_text() == "\n".join(PEERS[name]):
            return python
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "-q", *PEERS[name]],
        ]
        for step in steps:
            try:
                run = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise Unavailable(
                    f"installing peer {name} ({' '.join(PEERS[name])}) took over {INSTALL_TIMEOUT_S}s"
                ) from None
            if run.returncode != 0:
                raise Unavailable(f"peer {name} ({' '.join(PEERS[name])}) did not install: {run.stderr[-2000:]}")
        done.write_text("\n".join(PEERS[name]))
    return python
