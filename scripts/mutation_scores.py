"""Print the mutation score of each rule module after ``make mutate``: killed mutants out of those that are not
equivalent, from mutmut's results under ``mutants/`` and the equivalent mutants listed in ``docs/testing.md``."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 24, -24, 36, 152, 255}  # a failing test, pytest's internal error, or a timeout (a loop that never ends)
SURVIVED = {0}  # the tests that reach the mutant all passed
UNREACHED = {5, 33}  # no listed test reaches the mutated function
EQUIVALENT = re.compile(r"^- `([^`]+__mutmut_\d+)`", re.MULTILINE)
GOAL = 0.90


def equivalent_mutants(doc: Path) -> set[str]:
    """The mutants ``docs/testing.md`` names as equivalent (each with its reason there)."""
    return set(EQUIVALENT.findall(doc.read_text())) if doc.exists() else set()


def module_counts(mutants: Path, equivalent: set[str]) -> dict[str, Counter[str]]:
    """Per source file: killed, survived, unreached (no tests), equivalent and unchecked mutants."""
    counts: dict[str, Counter[str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants)).removesuffix(".meta")
        tally = counts.setdefault(module, Counter())
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if name in equivalent:
                tally["equivalent"] += 1
            elif code in KILLED:
                tally["killed"] += 1
            elif code in SURVIVED:
                tally["survived"] += 1
            elif code in UNREACHED:
                tally["no tests"] += 1
            else:
                tally["unchecked"] += 1
    return counts


def report(counts: dict[str, Counter[str]]) -> tuple[str, bool]:
    """The table, and whether every module reaches the goal."""
    lines = [f"{'module':34} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'equiv.':>6} {'score':>6}"]
    reached = True
    for module, tally in counts.items():
        judged = tally["killed"] + tally["survived"] + tally["no tests"]
        score = f"{tally['killed'] / judged:6.1%}" if judged else "     -"
        reached &= bool(judged) and tally["killed"] >= GOAL * judged and not tally["unchecked"]
        counted = (sum(tally.values()), tally["killed"], tally["survived"], tally["no tests"], tally["equivalent"])
        row = f"{module:34} " + " ".join(f"{n:{w}}" for n, w in zip(counted, (7, 6, 8, 8, 6), strict=True))
        lines.append(f"{row} {score}" + (f"  ({tally['unchecked']} not checked)" if tally["unchecked"] else ""))
    return "\n".join(lines), reached


def main(modules: list[str]) -> int:
    """The table of every mutated module, or of ``modules`` only (paths such as ``eventing/delivery.py``)."""
    root = Path(__file__).resolve().parent.parent
    counts = module_counts(root / "mutants", equivalent_mutants(root / "docs" / "testing.md"))
    if modules:
        counts = {module: tally for module, tally in counts.items() if module in modules}
    if not counts:
        print("no mutation results under mutants/: run `make mutate` first", file=sys.stderr)
        return 2
    table, reached = report(counts)
    print(table)
    print(f"goal: {GOAL:.0%} of the non-equivalent mutants killed in each module: {'met' if reached else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
