"""Every ``# type: ignore`` in the packages mypy checks names its error code and says why on the same line."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_type_ignores.py"


def run(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True, check=False)


def test_every_type_ignore_in_the_packages_has_a_code_and_a_reason():
    result = run()
    assert result.returncode == 0, result.stdout


def test_a_type_ignore_without_a_reason_or_a_code_is_refused_with_its_line(tmp_path):
    (tmp_path / "bad.py").write_text(
        "a = f()  # type: ignore[arg-type]\n"
        "b = g()  # type: ignore\n"
        "c = h()  # type: ignore[misc]  #\n"
        "d = k()  # type: ignore[misc]  # the stub says int, the library returns str\n"
    )
    result = run(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(":")[1] for line in lines] == ["1", "2", "3"]
    assert "without a reason" in lines[0]
    assert "without an error code" in lines[1]
