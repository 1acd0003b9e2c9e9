"""Both blob stores keep one promise: a key holds the whole of what was last put there, or nothing."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.blobs import BlobMissing, BlobStore, BlobStoreUnavailable, open_blob_store
from core.file_blobs import FileBlobStore
from core.s3_blobs import S3BlobStore
from core.settings import InvalidSettings, Settings, load_settings
from tests.support.object_store import S3Server


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return open_blob_store(Settings(storage_dir=tmp_path / "blobs"))
    s3: S3Server = request.getfixturevalue("s3")
    return open_blob_store(Settings.model_validate(s3.settings()))


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_a_key_holds_what_was_put_last(store: BlobStore) -> None:
    key = store.result_key("abc")
    await store.put(key, b"first")
    await store.put(key, b"second")  # a re-run overwrites the same key
    assert await store.get(key) == b"second"
    assert await store.exists(key)


async def test_a_file_is_stored_in_chunks_and_streamed_back(store: BlobStore) -> None:
    data = bytes(range(256)) * (7 * 2**20 // 256)  # past S3's 5 MiB part size: sent in parts
    source = io.BytesIO(b"skipped" + data)
    source.seek(len(b"skipped"))  # stored from the current position on
    await store.put_file(store.upload_key("big"), source)

    blob = await store.open(store.upload_key("big"))
    assert blob.size_bytes == len(data)
    assert await read_all(blob.chunks) == data
    again = await store.open(store.upload_key("big"))
    assert again.etag == blob.etag, "the version tag names the content"
    await again.aclose()
    await store.put(store.upload_key("big"), b"other")
    changed = await store.open(store.upload_key("big"))
    assert changed.etag != blob.etag
    await changed.aclose()


async def test_a_missing_key_is_missing_everywhere(store: BlobStore) -> None:
    key = store.result_key("never")
    assert not await store.exists(key)
    with pytest.raises(BlobMissing):
        await store.get(key)
    with pytest.raises(BlobMissing):
        await store.open(key)
    await store.put(key, b"x")
    await store.delete(key)
    await store.delete(key)  # already gone: fine
    assert not await store.exists(key)


async def test_only_old_keys_under_the_prefix_are_listed(store: BlobStore) -> None:
    await store.put(store.upload_key("a"), b"a")
    await store.put(store.result_key("a"), b"a")
    assert await store.keys_older_than("uploads", age_s=3600) == []
    assert await store.keys_older_than("uploads", age_s=-60) == ["uploads/a"]


async def test_only_an_object_store_signs_urls(store: BlobStore) -> None:
    await store.put(store.result_key("s"), b"signed")
    url = await store.signed_url(store.result_key("s"), expires_s=60)
    if isinstance(store, S3BlobStore):
        assert url is not None
        assert "X-Amz-Signature=" in url
    else:
        assert url is None


async def test_an_unreachable_object_store_is_unavailable_not_missing() -> None:
    store = open_blob_store(
        Settings(
            blob_store_url="s3://images/x",
            s3_endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="k",
            aws_secret_access_key="s",
        )
    )
    with pytest.raises(BlobStoreUnavailable):
        await store.put("results/x.png", b"x")


def test_the_store_url_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_blob_store(Settings(storage_dir=tmp_path)), FileBlobStore)
    folder = open_blob_store(Settings(blob_store_url=f"file://{tmp_path}/elsewhere"))
    assert isinstance(folder, FileBlobStore)
    assert folder.root == tmp_path / "elsewhere"
    assert isinstance(open_blob_store(Settings(blob_store_url="s3://bucket/prefix")), S3BlobStore)


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"BLOB_STORE_URL": "gs://bucket"}, "BLOB_STORE_URL: Value error, expected file:///ABSOLUTE/PATH or s3://"),
        ({"BLOB_STORE_URL": "file://relative/path"}, "BLOB_STORE_URL: Value error"),
        ({"RESULT_DOWNLOAD": "redirect"}, "RESULT_DOWNLOAD=redirect needs an object store"),
    ],
)
def test_bad_store_settings_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], problem: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as raised:
        load_settings()
    assert problem in str(raised.value)
