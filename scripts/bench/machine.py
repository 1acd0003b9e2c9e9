"""What the figures were measured on: the machine and the versions of everything in the path.

Ratios travel between machines better than absolute figures, but neither means much without knowing the CPU,
its count, the memory and how busy the machine was when the run started.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "aiokafka",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "aiohttp",
    "pillow",
    "sqlalchemy",
    "aiosqlite",
    "faststream",
)


def machine() -> dict[str, Any]:
    """Platform, CPU model and count, memory, and the load average at the start of the run."""
    load_1m, load_5m, _ = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_mib": _memory_mib(),
        "load_average_at_start": [round(load_1m, 2), round(load_5m, 2)],
    }


def versions(kafka_broker: str) -> dict[str, str]:
    """Python, the libraries in the measured path and the Kafka broker's version."""
    found = {"python": sys.version.split()[0], "kafka_broker": kafka_broker}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_mib() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None
