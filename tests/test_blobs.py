"""The blob store keeps keys inside its root and never leaves half-written files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.file_blobs import FileBlobStore


async def test_put_then_get_round_trips_and_overwrites(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = store.result_key("abc")
    await store.put(key, b"first")
    await store.put(key, b"second")  # a re-run overwrites the same key

    assert await store.get(key) == b"second"
    assert await store.exists(key)
    assert [path.name for path in (tmp_path / "results").iterdir()] == ["abc.png"], "no temporary files left"


@pytest.mark.parametrize("key", ["../outside", "uploads/../../outside", "/etc/passwd", "", ".", "uploads/.."])
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="outside the store"):
        FileBlobStore(tmp_path / "store").path(key)


def test_keys_map_below_the_root(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    assert store.path("uploads/x") == tmp_path.resolve() / "uploads" / "x"


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
async def test_files_get_the_process_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """An API and workers running as different users share a store through their group and umask."""
    store = FileBlobStore(tmp_path)
    previous = os.umask(umask)
    try:
        await store.put("results/a.png", b"png")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "results" / "a.png").stat().st_mode) == mode
