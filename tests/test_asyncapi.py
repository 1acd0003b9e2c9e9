"""The published event contract: valid AsyncAPI 3.0.0, true to the models and headers, current in docs/, served.

The schema is ``schemas/3.0.0.json`` of the npm package ``@asyncapi/specs`` 6.11.1 (github.com/asyncapi/
spec-json-schemas), vendored with its licence and notice in tests/schemas/. It carries every definition it
refers to under its own ``$id``; the registry below refuses to fetch anything, so the check never goes online.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from core.settings import Settings
from schemas import (
    DeadLetterHeader,
    EventHeader,
    FilterName,
    ImageProcessV2,
    RedriveHeader,
    TraceHeader,
    UrlSource,
    encode_event,
    event_models,
)
from schemas.asyncapi import (
    CALLBACKS,
    CALLBACKS_TOPIC_SETTING,
    DEAD_LETTERS,
    DLQ_TOPIC_SETTING,
    IMAGES,
    IMAGES_TOPIC_SETTING,
    asyncapi_document,
    schema_reference_prefix,
)
from scripts.asyncapi import DOCS, DOCUMENT, published_files, stale_files, write_files
from tests.support.api import api_client
from tests.support.settings import make_settings

SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "asyncapi-3.0.0.json"
DOCUMENT_URI = "urn:image-pipeline:asyncapi"
DEFAULTS = Settings.model_construct()
EVERY_HEADER = [*EventHeader, *DeadLetterHeader, *RedriveHeader, *TraceHeader]


class Topics(NamedTuple):
    images_topic: str
    dlq_topic: str
    callbacks_topic: str = "images.callbacks"


def _offline(uri: str) -> Resource[Any]:
    raise NoSuchResource(uri)


def _offline_registry() -> Registry[Any]:
    """A registry that never fetches: a reference the vendored file lacks fails the test instead of going online."""
    # mypy's attrs plugin does not see the ``retrieve`` alias of Registry's private field.
    return Registry(retrieve=_offline)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, registry=_offline_registry())


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(DEFAULTS)


def _errors(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    """Each error and, under a ``oneOf``, each alternative's: where the schema's branches say what is wrong."""
    found: list[str] = []
    pending = list(validator.iter_errors(document))
    while pending:
        error = pending.pop()
        found.append(f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
        pending.extend(error.context or [])
    return found


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _resolve(document: dict[str, Any], reference: str) -> Any:
    assert reference.startswith("#/"), reference
    node: Any = document
    for segment in reference.removeprefix("#/").split("/"):
        node = node[segment.replace("~1", "/").replace("~0", "~")]
    return node


def _with_local_references(node: Any, prefix: str) -> Any:
    """``node`` with references to ``prefix`` turned back into the ``#/$defs/`` ones pydantic writes."""
    if isinstance(node, dict):
        return {key: _with_local_references(value, prefix) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_local_references(item, prefix) for item in node]
    if isinstance(node, str) and node.startswith(prefix):
        return "#/$defs/" + node.removeprefix(prefix)
    return node


def test_the_document_is_valid_asyncapi_3(validator: Draft7Validator, document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert _errors(validator, document) == []


def test_the_schema_check_is_not_vacuous(validator: Draft7Validator, document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    broken["operations"]["submitImageJob"]["action"] = "publish"  # AsyncAPI 2's word
    broken["channels"][IMAGES]["adress"] = broken["channels"][IMAGES].pop("address")
    # Without the draft-07 schema format, pydantic's discriminator object is not an AsyncAPI schema.
    del broken["components"]["schemas"]["image_process.v2"]["schemaFormat"]
    messages = "\n".join(_errors(validator, broken))
    assert "operations/submitImageJob/action" in messages
    assert "adress" in messages
    assert "components/schemas/image_process.v2" in messages


def test_every_reference_points_into_the_document(document: dict[str, Any]) -> None:
    references = set(_references(document))
    assert len(references) > 10
    for reference in references:
        assert _resolve(document, reference) is not None, reference


def test_channel_addresses_are_the_configured_topic_names() -> None:
    document = asyncapi_document(Topics(images_topic="jobs-eu", dlq_topic="jobs-eu.dead", callbacks_topic="jobs-eu.cb"))
    assert document["channels"][IMAGES]["address"] == "jobs-eu"
    assert document["channels"][DEAD_LETTERS]["address"] == "jobs-eu.dead"
    assert document["channels"][CALLBACKS]["address"] == "jobs-eu.cb"
    # The settings the document names exist, under those names.
    settings = {name.upper() for name in Settings.model_fields}
    assert {IMAGES_TOPIC_SETTING, DLQ_TOPIC_SETTING, CALLBACKS_TOPIC_SETTING} <= settings
    assert document["channels"][CALLBACKS]["x-address-setting"] == CALLBACKS_TOPIC_SETTING
    assert document["channels"][IMAGES]["x-address-setting"] == IMAGES_TOPIC_SETTING
    assert document["channels"][DEAD_LETTERS]["x-address-setting"] == DLQ_TOPIC_SETTING


def test_payload_schemas_are_the_models_json_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert len(schemas) == len(event_models())
    for (event_type, version), model in event_models().items():
        name = f"{event_type}.v{version}"
        published = _with_local_references(schemas[name]["schema"], schema_reference_prefix(name))
        assert published == model.model_json_schema(), name
        channel_message = _resolve(document, document["channels"][IMAGES]["messages"][name]["$ref"])
        assert channel_message["payload"] == {"$ref": f"#/components/schemas/{name}"}
        assert channel_message["headers"]["properties"][EventHeader.EVENT_VERSION]["const"] == str(version)


def test_payload_schema_takes_an_event_the_code_writes_and_refuses_a_broken_one(document: dict[str, Any]) -> None:
    registry = _offline_registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT7)
    )
    payload = Draft7Validator(
        {"$ref": f"{DOCUMENT_URI}#/components/schemas/image_process.v2/schema"},
        registry=registry,
    )
    event = ImageProcessV2(
        event_id=uuid.uuid4(),
        image_id=uuid.uuid4(),
        source=UrlSource.model_validate({"url": "https://example.com/cat.png"}),
        filter=FilterName.SEPIA,
        requested_at=dt.datetime.now(dt.UTC),
        owner="key-1",
    )
    written = json.loads(encode_event(event))
    assert list(payload.iter_errors(written)) == []
    broken = written | {"filter": "posterize", "source": {"kind": "blob", "key": "../x", "size_bytes": 1}}
    assert {error.json_path for error in payload.iter_errors(broken)} >= {"$.filter", "$.source"}


def test_every_header_is_described_where_it_is_written(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    dead_letter = messages["dead_letter.image_process.v2"]["headers"]
    assert set(dead_letter["properties"]) == {header.value for header in EVERY_HEADER}
    assert set(dead_letter["required"]) == {header.value for header in [*EventHeader, *DeadLetterHeader]}
    for header in EVERY_HEADER:
        assert dead_letter["properties"][header]["description"], header
    event = messages["image_process.v2"]["headers"]
    assert set(event["properties"]) == {header.value for header in [*EventHeader, *RedriveHeader, *TraceHeader]}
    assert set(event["required"]) == {header.value for header in EventHeader}
    assert set(messages["dead_letter.unreadable"]["headers"]["required"]) == {h.value for h in DeadLetterHeader}


def test_operations_name_messages_of_their_own_channel(document: dict[str, Any]) -> None:
    actions = {
        name: (operation["action"], operation["channel"]["$ref"]) for name, operation in document["operations"].items()
    }
    assert actions == {
        "submitImageJob": ("send", f"#/channels/{IMAGES}"),
        "processImageJob": ("receive", f"#/channels/{IMAGES}"),
        "deadLetterImageJob": ("send", f"#/channels/{DEAD_LETTERS}"),
        "readDeadLetters": ("receive", f"#/channels/{DEAD_LETTERS}"),
        "redriveDeadLetters": ("send", f"#/channels/{IMAGES}"),
        "appendJobCallback": ("send", f"#/channels/{CALLBACKS}"),
        "deliverJobCallback": ("receive", f"#/channels/{CALLBACKS}"),
    }
    for name, operation in document["operations"].items():
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), name
    # The API writes the current version only.
    assert document["operations"]["submitImageJob"]["messages"] == [
        {"$ref": f"#/channels/{IMAGES}/messages/image_process.v3"}
    ]


def test_the_published_files_are_current() -> None:
    files = published_files(DEFAULTS)
    assert set(files) == {DOCUMENT, *(Path("schemas") / f"{t}.v{v}.json" for t, v in event_models())}
    assert stale_files(DOCS, files) == [], "run python -m scripts.asyncapi"
    for (event_type, version), model in event_models().items():
        standalone = json.loads((DOCS / "schemas" / f"{event_type}.v{version}.json").read_text())
        assert standalone.pop("$schema") == "https://json-schema.org/draft/2020-12/schema"
        assert standalone == model.model_json_schema()


def test_check_finds_a_changed_a_missing_and_a_left_over_file(tmp_path: Path) -> None:
    files = published_files(DEFAULTS)
    write_files(tmp_path, files)
    assert stale_files(tmp_path, files) == []
    (tmp_path / DOCUMENT).write_text("{}\n")
    (tmp_path / "schemas" / "image_process.v1.json").unlink()
    (tmp_path / "schemas" / "image_process.v0.json").write_text("{}\n")
    assert stale_files(tmp_path, files) == [
        DOCUMENT,
        Path("schemas/image_process.v1.json"),
        Path("schemas/image_process.v0.json"),
    ]
    write_files(tmp_path, files)
    assert stale_files(tmp_path, files) == []


async def test_the_api_serves_the_document_without_a_key(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, auth_disabled=False)
    async with api_client(settings) as api:
        response = await api.get("/asyncapi.json")
        unauthorized = await api.get("/images")
    assert unauthorized.status_code == 401, "keys are on"
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(published_files(settings)[DOCUMENT])
    assert response.json()["channels"][IMAGES]["address"] == settings.images_topic
