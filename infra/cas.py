"""Read-modify-write of one stored object by compare-and-swap, so concurrent writers lose no update."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from infra.errors import NotFound, Unavailable
from infra.store import ArtifactStore

log = logging.getLogger(__name__)

ATTEMPTS = 60
MAX_BACKOFF_S = 0.2


def update(
    store: ArtifactStore,
    key: str,
    change: Callable[[bytes | None], bytes | None],
    *,
    content_type: str = "application/json",
    attempts: int = ATTEMPTS,
) -> bytes | None:
    """Apply ``change`` to the object's current bytes (``None`` when absent) and store its result only if no one
    wrote in between, else read again and re-apply (jittered backoff); returns what the object holds after.

    ``change`` returns the new bytes, or ``None`` to leave the object as it is. It may run more than once, and
    a write whose answer was lost is seen again as the current state, so it must be a pure function of its
    input that is idempotent (applying it to its own output changes nothing more).
    """
    for attempt in range(attempts):
        try:
            current, version = store.get_versioned(key)
        except NotFound:
            current, version = None, None
        new = change(current)
        if new is None or new == current:
            return current
        if version is None:
            written = store.put_if_absent(key, new, content_type=content_type)
        else:
            written = store.put_if_match(key, new, version, content_type=content_type)
        if written is not None:
            return new
        log.debug("%s changed under us (attempt %d); reading it again", key, attempt + 1)
        time.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.005 * 2**attempt)))
    raise Unavailable(f"{key}: {attempts} concurrent updates in a row; try again")
