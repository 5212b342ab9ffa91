"""The artifact store contract, proven once per backend (file and a live S3 server)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra import cas
from infra.errors import IntegrityError, InvalidRequest, NotFound
from infra.store import ArtifactStore, validate_key


def test_put_get_stat_round_trip(store: ArtifactStore) -> None:
    info = store.put("datasets/digits/a.bin", b"hello knflow", metadata={"stage": "raw"})
    assert info.size == 12
    assert store.get("datasets/digits/a.bin") == b"hello knflow"
    stat = store.stat("datasets/digits/a.bin")
    assert stat.sha256 == info.sha256
    assert stat.size == 12
    assert stat.metadata.get("stage") == "raw"


def test_sha256_is_the_content_digest(store: ArtifactStore) -> None:
    info = store.put("k/x", b"abc")
    assert info.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert store.stat("k/x").sha256 == hashlib.sha256(b"abc").hexdigest()


def test_put_accepts_stream_and_file(store: ArtifactStore, tmp_path: Path) -> None:
    store.put("s/stream", io.BytesIO(b"x" * 3_000_000))
    local = tmp_path / "f.bin"
    local.write_bytes(b"y" * 1234)
    store.put("s/file", local)
    assert store.get("s/stream") == b"x" * 3_000_000
    assert store.get("s/file") == b"y" * 1234


def test_overwrite_replaces_the_object(store: ArtifactStore) -> None:
    store.put("o/k", b"first")
    store.put("o/k", b"second version")
    assert store.get("o/k") == b"second version"
    assert store.stat("o/k").size == len(b"second version")


def test_put_if_match_replaces_only_the_version_that_was_read(store: ArtifactStore) -> None:
    store.put("cas/k", b"one")
    data, version = store.get_versioned("cas/k")
    assert data == b"one"
    assert store.put_if_match("cas/k", b"two", version) is not None
    assert store.put_if_match("cas/k", b"three", version) is None  # stale: someone (we) wrote since
    assert store.get("cas/k") == b"two"
    assert store.put_if_match("cas/missing", b"x", version) is None  # nothing there to match
    assert not store.exists("cas/missing")
    data, newer = store.get_versioned("cas/k")
    assert (data, store.put_if_match("cas/k", b"four", newer) is not None) == (b"two", True)
    assert store.get("cas/k") == b"four" and store.stat("cas/k").sha256 == hashlib.sha256(b"four").hexdigest()


def test_read_modify_write_by_compare_and_swap_loses_no_update(store: ArtifactStore) -> None:
    def add(name: str):
        def change(current: bytes | None) -> bytes:
            names = json.loads(current) if current else []
            return json.dumps(sorted({*names, name})).encode()

        return change

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: cas.update(store, "cas/set.json", add(f"w{i}")), range(24)))
    assert json.loads(store.get("cas/set.json")) == sorted(f"w{i}" for i in range(24))


def test_list_is_sorted_and_filtered_by_prefix(store: ArtifactStore) -> None:
    for key in ["runs/r2/m.json", "runs/r1/b", "runs/r1/a", "models/m/1/model.onnx"]:
        store.put(key, key.encode())
    listed = [(i.key, i.size) for i in store.list("runs/")]
    assert listed == [("runs/r1/a", 9), ("runs/r1/b", 9), ("runs/r2/m.json", 14)]
    assert [i.key for i in store.list("runs/r1/")] == ["runs/r1/a", "runs/r1/b"]
    assert [i.key for i in store.list("nothing/")] == []
    assert len(list(store.list())) == 4


def test_delete_and_missing_object(store: ArtifactStore) -> None:
    store.put("d/k", b"1")
    assert store.exists("d/k")
    store.delete("d/k")
    assert not store.exists("d/k")
    store.delete("d/k")  # deleting an absent object is not an error
    with pytest.raises(NotFound, match="d/k"):
        store.get("d/k")
    with pytest.raises(NotFound, match="d/k"):
        store.stat("d/k")


def test_download_is_verified_and_atomic(store: ArtifactStore, tmp_path: Path) -> None:
    store.put("dl/k", b"z" * 100_000)
    dest = tmp_path / "out" / "k.bin"
    info = store.download("dl/k", dest)
    assert dest.read_bytes() == b"z" * 100_000
    assert info.size == 100_000


@pytest.mark.parametrize("key", ["", "/abs/path", "a//b", "a/../b", "../x", "a/./b", "a/", "a\\b", "sp ace"])
def test_invalid_keys_are_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidRequest):
        store.put(key, b"x")


def test_valid_keys_pass_validation() -> None:
    for key in ["raw/digits/digits.npz", "models/m/3/model.onnx", "a=b/c@d,e:f~g+h-i_j.k"]:
        assert validate_key(key) == key


def test_corruption_behind_the_store_is_detected_on_read(store: ArtifactStore) -> None:
    store.put("models/m/1/model.onnx", b"the real model bytes")
    _corrupt(store, "models/m/1/model.onnx", b"the evil model bytes")
    with pytest.raises(IntegrityError, match=re.escape("models/m/1/model.onnx")):
        store.get("models/m/1/model.onnx")


def _corrupt(store: ArtifactStore, key: str, payload: bytes) -> None:
    """Replace an object's bytes without going through the store (keeping the recorded digest)."""
    if store.url.startswith("file://"):
        (Path(store.url[len("file://") :]) / key).write_bytes(payload)
        return
    # S3: rewrite the object with its old sha256 metadata but new content
    sha = store.stat(key).sha256
    store.client.put_object(  # type: ignore[attr-defined]
        store.bucket,
        key,
        io.BytesIO(payload),
        len(payload),  # type: ignore[attr-defined]
        metadata={"sha256": sha},
    )


def test_missing_bucket_is_a_clear_error(s3_server) -> None:
    from infra.settings import parse_store_url
    from infra.store import open_store

    location = parse_store_url(
        f"s3://no-such-bucket?endpoint={s3_server.url}",
        {"AWS_ACCESS_KEY_ID": "knflow", "AWS_SECRET_ACCESS_KEY": "knflow-secret"},
    )
    with pytest.raises(NotFound, match="bucket 'no-such-bucket' does not exist"):
        open_store(location).put("a/b", b"x")


def test_file_store_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    from infra.store import open_store

    store = open_store(f"file://{tmp_path}")

    class Exploding(io.RawIOBase):
        def __init__(self) -> None:
            self.n = 0

        def read(self, size: int = -1) -> bytes:
            self.n += 1
            if self.n > 3:
                raise OSError("source broke mid-stream")
            return b"x" * 1000

    with pytest.raises(OSError):
        store.put("p/k", Exploding())  # type: ignore[arg-type]
    assert not (tmp_path / "p" / "k").exists()
    assert list((tmp_path / ".knflow-tmp").iterdir()) == []


def test_file_store_notifies_listeners_after_put(tmp_path: Path) -> None:
    from infra.store import open_store

    store = open_store(f"file://{tmp_path}")
    seen = []
    store.add_listener(seen.append)
    store.put("raw/digits/d.npz", b"1234")
    assert [(i.key, i.size) for i in seen] == [("raw/digits/d.npz", 4)]


def test_hand_placed_file_is_adopted_and_then_verified(tmp_path: Path) -> None:
    from infra.store import open_store

    store = open_store(f"file://{tmp_path}")
    (tmp_path / "raw" / "x").mkdir(parents=True)
    (tmp_path / "raw" / "x" / "data.csv").write_bytes(b"a,b\n1,2\n")
    assert store.get("raw/x/data.csv") == b"a,b\n1,2\n"
    (tmp_path / "raw" / "x" / "data.csv").write_bytes(b"a,b\n9,9\n")
    with pytest.raises(IntegrityError, match=re.escape("raw/x/data.csv")):
        store.get("raw/x/data.csv")


ROUND_TRIP = r"""
import hashlib, json, resource, sys
from infra.settings import parse_store_url
from infra.store import open_store

url, size_mib = sys.argv[1], int(sys.argv[2])
env = {"AWS_ACCESS_KEY_ID": "knflow", "AWS_SECRET_ACCESS_KEY": "knflow-secret"}
store = open_store(parse_store_url(url, env))
store.put("warm/up", b"x")  # import and connect before the baseline
store.get("warm/up")

class Source:
    def __init__(self, total):
        self.left, self.block = total, bytes(range(256)) * 4096
    def read(self, n=-1):
        n = min(self.left, len(self.block) if n < 0 else min(n, len(self.block)))
        self.left -= n
        return self.block[:n]

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total = size_mib * 1024 * 1024
info = store.put("big/object.bin", Source(total))
digest, got = hashlib.sha256(), 0
with store.open("big/object.bin") as reader:
    while chunk := reader.read(1 << 20):
        digest.update(chunk); got += len(chunk)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": got, "put_size": info.size, "ok": digest.hexdigest() == info.sha256,
                  "rss_growth_mib": (peak - base) / 1024}))
"""


@pytest.mark.slow
def test_200_mib_round_trip_streams_without_holding_the_object(store: ArtifactStore, tmp_path: Path) -> None:
    url = (
        store.url
        if store.url.startswith("file://")
        else (
            f"s3://{store.bucket}?endpoint=http://{store.location.endpoint}"  # type: ignore[attr-defined]
        )
    )
    out = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, url, "200"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n200 MiB round trip via {url.split(':')[0]}: peak RSS growth {result['rss_growth_mib']:.1f} MiB")
    assert result["ok"] and result["size"] == result["put_size"] == 200 * 1024 * 1024
    assert result["rss_growth_mib"] < 64


def test_file_store_reads_of_an_object_being_rewritten_never_fail_their_check(tmp_path: Path) -> None:
    from infra.store import open_store

    store = open_store(f"file://{tmp_path}")
    store.put("busy/state.json", b"0")
    stop = False

    def rewrite() -> None:
        i = 0
        while not stop:
            i += 1
            store.put("busy/state.json", str(i).encode() * (1 + i % 7))

    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(rewrite)
        try:
            for _ in range(2000):
                assert store.get("busy/state.json")  # raised IntegrityError when it fell between meta and bytes
        finally:
            stop = True
        writer.result()


DIES_MID_PUT = r"""
import os, sys
from infra.store import open_store

store, renames, real = open_store(sys.argv[1]), [0], os.replace

def replace(src, dst):  # the put's renames: its pending metadata, its bytes, its metadata
    real(src, dst)
    renames[0] += 1
    if renames[0] == int(sys.argv[2]):
        os._exit(9)  # killed right here: no cleanup, the kernel drops its lock

os.replace = replace
store.put("runs/r/experiment.json", b'{"version": 2}', content_type="application/json")
"""


@pytest.mark.parametrize(("renames", "holds"), [(1, b'{"version": 1}'), (2, b'{"version": 2}')])
def test_file_store_writer_killed_between_its_renames_leaves_an_object_that_reads(
    tmp_path: Path, renames: int, holds: bytes
) -> None:
    """A put killed after writing its pending metadata (1) or after renaming its bytes too (2): the next read
    gets the version whose bytes are in place, checked against the right sha256, not an IntegrityError."""
    from infra.store import open_store

    store = open_store(f"file://{tmp_path}")
    store.put("runs/r/experiment.json", b'{"version": 1}', content_type="application/json")
    died = subprocess.run([sys.executable, "-c", DIES_MID_PUT, store.url, str(renames)], cwd=Path.cwd(), check=False)
    assert died.returncode == 9
    assert (tmp_path / ".knflow-meta/runs/r/experiment.json.json.next").exists()  # left by the dead writer

    assert store.get("runs/r/experiment.json") == holds
    info = store.stat("runs/r/experiment.json")
    assert info.sha256 == hashlib.sha256(holds).hexdigest() and info.size == len(holds)
    assert not (tmp_path / ".knflow-meta/runs/r/experiment.json.json.next").exists()  # settled once
    _, version = store.get_versioned("runs/r/experiment.json")
    assert store.put_if_match("runs/r/experiment.json", b'{"version": 3}', version) is not None
    assert store.get("runs/r/experiment.json") == b'{"version": 3}'
