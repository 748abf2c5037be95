"""Check the README main command's printed seed table against the README's expected output.

Usage: python .ci/compare_main_output.py README.md main_command.log

The README shows the table the main command prints (the ``text`` block right after
the line "Expected output"). Every row of it (a label, two or more spaces, a
number) must appear in the log with the same label and a number within 0.5: CPUs
differ in their last float bits, not in the result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROW = re.compile(r"^(\S.*?)\s{2,}([+-]?\d+\.\d+)")
TOLERANCE = 0.5


def expected_block(readme: str) -> list[str]:
    """The lines of the README's expected-output text block."""
    lines = readme.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Expected output"):
            start = lines.index("```text", index) + 1
            end = lines.index("```", start)
            return lines[start:end]
    raise SystemExit("error: README.md: no 'Expected output' text block")


def rows(lines: list[str]) -> dict[str, float]:
    """``{label: first number}`` of every table row among ``lines``."""
    found = {}
    for line in lines:
        match = ROW.match(line)
        if match:
            found[match.group(1).strip()] = float(match.group(2))
    return found


def main(readme_path: str, log_path: str) -> int:
    """Compare; print what differs; return the exit status."""
    expected = rows(expected_block(Path(readme_path).read_text()))
    printed = rows(Path(log_path).read_text().splitlines())
    if len(expected) < 5:
        print(f"error: README.md: the expected table has {len(expected)} rows", file=sys.stderr)
        return 1
    bad = [
        f"{label}: README {value:.2f}, printed {printed.get(label)}"
        for label, value in expected.items()
        if label not in printed or abs(printed[label] - value) > TOLERANCE
    ]
    for line in bad:
        print(f"main command output differs from README.md: {line}", file=sys.stderr)
    if not bad:
        print(f"main command output matches README.md ({len(expected)} rows, within {TOLERANCE})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
