"""The README documents exactly the settings the code reads, with the defaults the code uses."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_settings() -> dict[str, str]:
    section = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {name: default.strip().strip("`") for name, default in rows}


def test_every_setting_is_documented_with_its_default() -> None:
    documented = documented_settings()
    assert set(documented) == {name.upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        assert documented[name.upper()] == shown, name
