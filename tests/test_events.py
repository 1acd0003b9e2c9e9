"""The event wire format: what producers write is what consumers read, and bad records say why."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from schemas import (
    BlobSource,
    FilterName,
    ImageProcessV1,
    MalformedEvent,
    UnsupportedEventVersion,
    UrlSource,
    decode_event,
    encode_event,
    event_headers,
)


def make_event(**overrides: object) -> ImageProcessV1:
    fields: dict[str, object] = {
        "event_id": uuid.uuid4(),
        "image_id": uuid.uuid4(),
        "source": UrlSource.model_validate({"url": "https://example.com/cat.png"}),
        "filter": FilterName.SEPIA,
        "requested_at": dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC),
    }
    fields.update(overrides)
    return ImageProcessV1.model_validate(fields)


@pytest.mark.parametrize(
    "source",
    [
        UrlSource.model_validate({"url": "http://example.com/a.jpg?size=2"}),
        BlobSource(key="uploads/abc", size_bytes=10, sha256="0" * 64),
    ],
)
def test_round_trip(source: UrlSource | BlobSource) -> None:
    event = make_event(source=source)
    assert decode_event(encode_event(event)) == event


def test_wire_format_names_type_and_version() -> None:
    document = json.loads(encode_event(make_event()))
    assert document["type"] == "image_process"
    assert document["version"] == 1
    assert document["filter"] == "sepia"
    assert dict(event_headers(make_event())) == {
        "content-type": b"application/json",
        "event-type": b"image_process",
        "event-version": b"1",
    }


@pytest.mark.parametrize(
    "value",
    [None, b"\xff\xfe garbage", b"not json", b"[1, 2]", b'"a string"'],
    ids=["tombstone", "not-utf8", "not-json", "array", "string"],
)
def test_undecodable_values_are_malformed(value: bytes | None) -> None:
    with pytest.raises(MalformedEvent):
        decode_event(value)


def test_unknown_version_is_reported_as_such() -> None:
    document = json.loads(encode_event(make_event()))
    document["version"] = 99
    with pytest.raises(UnsupportedEventVersion, match="99"):
        decode_event(json.dumps(document).encode())


@pytest.mark.parametrize(
    "change",
    [
        {"filter": "posterize"},
        {"extra_field": 1},
        {"requested_at": "2026-11-27T12:00:00"},  # no zone
        {"source": {"kind": "url", "url": "file:///etc/passwd"}},
        {"source": {"kind": "blob", "key": "../../etc/passwd", "size_bytes": 1, "sha256": "0" * 64}},
    ],
    ids=["unknown-filter", "extra-field", "naive-time", "file-url", "blob-key-escape"],
)
def test_schema_violations_are_malformed(change: dict[str, object]) -> None:
    document = json.loads(encode_event(make_event()))
    document.update(change)
    with pytest.raises(MalformedEvent):
        decode_event(json.dumps(document).encode())


def test_events_are_immutable() -> None:
    event = make_event()
    with pytest.raises(ValueError, match="frozen"):
        event.filter = FilterName.BLUR  # type: ignore[misc]
