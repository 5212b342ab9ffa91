"""Fuzzing conventions: Hypothesis, seeded (derandomized), bounded in count and time, with the tries counted.

``fuzz("name", examples=N, seconds=S)`` gives Hypothesis settings plus a ``Budget`` whose ``take()`` says
whether an example may still run; the count of inputs each fuzz target tried is printed after the run.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from infra.errors import KnflowError

TRIED: Counter[str] = Counter()


@dataclass
class Budget:
    """A fuzz target's time budget; examples after it are skipped (and not counted)."""

    name: str
    seconds: float
    started: float = field(default=0.0)

    def take(self) -> bool:
        now = time.monotonic()
        if not self.started:
            self.started = now
        if now - self.started > self.seconds:
            return False
        TRIED[self.name] += 1
        return True


def fuzz(name: str, *, examples: int = 200, seconds: float = 20.0) -> tuple[settings, Budget]:
    """Seeded settings for ``examples`` inputs, and the target's time budget."""
    return (
        settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.function_scoped_fixture,
                HealthCheck.data_too_large,
            ],
        ),
        Budget(name, seconds),
    )


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
#: JSON documents: scalars, lists and objects a few levels deep.
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes, most: int = 4) -> bytes:
    """``seed`` with up to ``most`` byte-wise changes: a byte flipped, bytes inserted or removed, a cut, a repeat."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, most))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 32))]
    return bytes(data)


def refused_or_done(call: Callable[[], object], refusals: tuple[type[KnflowError], ...], seconds: float = 2.0) -> bool:
    """Run ``call``: it returns, or raises one of knflow's ``refusals`` as a 4xx that is not retryable, within
    ``seconds`` of this process's CPU (all its threads: a reader's thread pool counts) and ten times that of wall
    clock (a wait that never ends); any other exception propagates and fails the test. Whether it returned.

    CPU, not wall time, is the bound so that other test workers loading the machine cannot fail an input that is
    cheap: a 2 s wall bound once failed a 34-byte IDX file refused in 0.3 ms."""
    started, cpu = time.monotonic(), time.process_time()
    try:
        call()
        done = True
    except refusals as exc:
        assert 400 <= exc.status < 500 and not exc.retryable, f"bad input refused as {exc.status}: {exc}"
        done = False
    took, wall = time.process_time() - cpu, time.monotonic() - started
    assert took < seconds, f"one input took {took:.1f} s of CPU"
    assert wall < 10 * seconds, f"one input took {wall:.1f} s"
    return done


@st.composite
def mutated_tree(draw: st.DrawFn, tree: object, most: int = 3, junk: st.SearchStrategy | None = None) -> object:
    """A deep copy of a JSON-like ``tree`` with up to ``most`` nodes replaced by ``junk`` (JSON values by default),
    removed, or given an extra member."""
    junk = json_values if junk is None else junk
    out = copy.deepcopy(tree)
    for _ in range(draw(st.integers(0, most))):
        parent, key = None, None
        node = out
        while isinstance(node, dict | list) and node and draw(st.integers(0, 3)):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            parent, node = node, node[key]
        op = draw(st.sampled_from(["replace", "remove", "add"]))
        if parent is None:
            if op == "replace":
                out = draw(junk)
            continue
        if op == "replace":
            parent[key] = draw(junk)
        elif op == "remove":
            del parent[key]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(junk)
        elif isinstance(node, list):
            node.append(draw(junk))
    return out
