"""infra.aio.cancel_and_wait: how every background task of a server is stopped."""

from __future__ import annotations

import asyncio

import pytest

from infra.aio import cancel_and_wait


async def test_a_running_task_has_ended_when_cancel_and_wait_returns() -> None:
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(task)
    assert task.done() and task.cancelled() and cleaned.is_set()


async def test_no_task_is_nothing_to_stop() -> None:
    await cancel_and_wait(None)


async def test_a_task_that_failed_raises_its_error() -> None:
    async def fails() -> None:
        raise RuntimeError("scan failed")

    task = asyncio.create_task(fails())
    await asyncio.wait([task])
    with pytest.raises(RuntimeError, match="scan failed"):
        await cancel_and_wait(task)
