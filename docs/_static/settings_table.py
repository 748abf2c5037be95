"""Write docs/settings_table.inc, the settings table of docs/reproducing.rst, from SETTINGS.

    python docs/_static/settings_table.py

tests/test_engine.py checks that the file in the repository is what this writes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from seedkit.engine import SETTINGS, STAGES

OUT = Path(__file__).resolve().parents[1] / "settings_table.inc"
NAMES = dict(zip(STAGES, ("stage 1", "stage 2", "stage 3"), strict=True))


def _show(value: Any) -> str:
    if hasattr(value, "stage") and not isinstance(value, dict):
        return f"as {NAMES[value.stage]}"
    if isinstance(value, float) and not math.isinf(value):
        return f"{value:g}"
    return "None" if value is None else str(value)


def rows() -> list[list[str]]:
    """One row per setting: name, flags, kind, stages, default(s), values, help."""
    table = []
    for setting in SETTINGS:
        flags = []
        for stage in setting.stages:
            flag = setting.flag(stage)
            if flag is not None and flag not in flags:
                flags.append(flag)
        defaults = setting.default
        if isinstance(defaults, dict) and defaults and set(defaults) <= set(STAGES):
            shown = "; ".join(
                f"{stage.replace('_', ' ')}: {_show(defaults[stage])}" for stage in setting.stages
            )
        else:
            shown = _show(defaults)
        stages = (
            "all" if setting.stages == STAGES
            else ", ".join(str(STAGES.index(stage) + 1) for stage in setting.stages)
        )
        affects = f" (affects: {', '.join(setting.affects)})" if setting.affects else ""
        table.append([
            f"``{setting.name}``", ", ".join(f"``{f}``" for f in flags) or "(derived)",
            setting.kind, stages, f"``{shown}``", setting.expected(), setting.help + affects,
        ])
    return table


def settings_table() -> str:
    """The table as reStructuredText."""
    header = ["setting", "flag", "kind", "stages", "default", "values", "what it does"]
    lines = [
        ".. This file is generated from seedkit.engine.SETTINGS by",
        "   docs/_static/settings_table.py; do not edit it by hand.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 14 14 8 6 12 16 30",
        "",
    ]
    for row in [header, *rows()]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.write_text(settings_table())
    print(f"wrote {OUT}", file=sys.stderr)
