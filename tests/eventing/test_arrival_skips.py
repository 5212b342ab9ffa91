"""The store's arrival sources announce data only: not companion files (``eventing.arrival_ignore``) and not objects
whose writer announced them itself (metadata ``knflow-announced``), on the file store and in MinIO notifications."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventing.sources.arrival import ANNOUNCED
from eventing.sources.filestore import FileStoreWatcher
from eventing.sources.minio import notification_events
from functions.contract import with_lifecycle
from infra.settings import load_settings
from infra.store_file import FileStore
from tests.eventing.test_sources import minio_notification


@pytest.fixture
def settings(tmp_path: Path):
    return with_lifecycle(load_settings({"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=None))


async def test_the_file_store_watcher_skips_options_files_idx_labels_and_self_announced_objects(
    tmp_path: Path, settings
) -> None:
    store = FileStore(tmp_path / "artifacts")
    store.put("raw/iris/knflow.json", b'{"label": "species"}')
    store.put("raw/mnist/t10k-labels-idx1-ubyte.gz", b"labels")
    store.put("raw/iris/submitted.csv", b"a,label\n1,0\n", metadata={ANNOUNCED: "run-1"})
    store.put("raw/iris/dropped.csv", b"a,label\n1,0\n")
    store.put("raw/mnist/t10k-images-idx3-ubyte.gz", b"images")
    published = []

    async def publish(event) -> None:
        published.append(event)

    watcher = FileStoreWatcher(tmp_path / "artifacts", tmp_path / "seen.json", settings.eventing)
    assert await watcher.scan(publish) == 2
    assert await watcher.scan(publish) == 0  # skipped objects are looked at once, not on every scan
    keys = sorted(e.get_data()["key"] for e in published)
    assert keys == ["raw/iris/dropped.csv", "raw/mnist/t10k-images-idx3-ubyte.gz"]


def test_minio_notifications_of_options_files_and_self_announced_objects_start_no_run(settings) -> None:
    dropped = minio_notification("knflow", "raw/iris/dropped.csv")
    options = minio_notification("knflow", "raw/iris/knflow.json")
    submitted = minio_notification("knflow", "raw/iris/submitted.csv")
    # MinIO sends the object's user metadata in canonical header form
    submitted["Records"][0]["s3"]["object"]["userMetadata"] = {
        "X-Amz-Meta-Knflow-Announced": "run-1",
        "content-type": "text/csv",
    }
    assert [e.get_data()["key"] for e in notification_events(dropped, settings)] == ["raw/iris/dropped.csv"]
    assert notification_events(options, settings) == []
    assert notification_events(submitted, settings) == []
