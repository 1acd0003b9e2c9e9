"""Scenario 8: the SSRF matrix against a real API and a real worker, both with the guard on.

Every target is refused: the API answers 422 naming ``url`` where it can tell without DNS (a scheme other than
http(s), a literal IP address outside the public ranges, in any spelling); host names (``localhost``) are
accepted there and refused by the worker, which resolves them and dead-letters the job. Every http(s) case is
also produced straight onto the topic, so the worker is shown to refuse it on its own (an event from an older
API, a replay). A canary HTTP server on loopback (IPv4 and IPv6) must see no request at all.

A redirect to a private address needs a first hop the guard lets through, and every server here is on loopback:
the worker process runs with ``STAND_IN_PUBLIC_ADDRESS=127.0.0.2`` (``tests/reliability/stand_in_worker.py``),
which makes that one address count as public and changes nothing else. A good image served there is the
positive control: the guarded worker does fetch what it may.
"""

from __future__ import annotations

import collections
import json
import uuid
from pathlib import Path

import httpx

from core.settings import Settings
from schemas import encode_event
from tests.reliability.conftest import StartApi
from tests.reliability.harness import Scale, count_figures, drain, record_figures, wait_until_ready
from tests.reliability.hostile import (
    EnvWorkerProcess,
    create_job_schema,
    dead_letters,
    headers_of,
    missing_metadata,
    routes,
)
from tests.support.events import Record, as_record, url_event
from tests.support.http_servers import redirect, respond
from tests.support.image_server import ImageServer
from tests.support.images import png_bytes
from tests.support.processes import ServiceProcess
from tests.support.worker import eventually, offsets_all_committed, produce

STAND_IN = "127.0.0.2"
BLOCKED = "blocked_url"
UNDECODABLE = "undecodable"

LITERAL_TARGETS = [
    "http://127.0.0.1:{v4}/secret.png",
    "http://[::1]:{v6}/secret.png",
    "http://[::ffff:127.0.0.1]:{v4}/secret.png",
    "http://2130706433:{v4}/secret.png",
    "http://0177.0.0.1:{v4}/secret.png",
    "http://0x7f000001:{v4}/secret.png",
    "http://127.1:{v4}/secret.png",
    "http://0.0.0.0:{v4}/secret.png",
    "http://10.0.0.1/a.png",
    "http://172.16.0.1/a.png",
    "http://192.168.1.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.png",
    "http://[fc00::1]/a.png",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/a.png",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
]
SCHEME_TARGETS = ["file:///etc/passwd", "gopher://127.0.0.1:{v4}/_secret", "ftp://127.0.0.1:{v4}/secret.png"]
HOST_NAME_TARGETS = ["http://localhost:{v4}/secret.png"]  # a name the API cannot judge; /etc/hosts: loopback
REDIRECTS = {
    "/to-loopback": "http://127.0.0.1:{v4}/secret.png",
    "/to-v6-loopback": "http://[::1]:{v6}/secret.png",
    "/to-localhost": "http://localhost:{v4}/secret.png",
    "/to-metadata": "http://169.254.169.254/latest/meta-data/",
    "/to-decimal": "http://2130706433:{v4}/secret.png",
}


async def test_ssrf_targets_are_refused_at_the_api_or_dead_lettered_by_the_worker(
    reliability_settings: Settings,
    images: ImageServer,
    start_api: StartApi,
    processes: list[ServiceProcess],
    scale: Scale,
    tmp_path: Path,
) -> None:
    settings = reliability_settings.model_copy(update={"allow_private_urls": False, "fetch_timeout_s": 3.0})
    secret = respond(body=png_bytes(seed=7), headers=[("Content-Type", "image/png")])
    async with routes({"/secret.png": secret}) as canary, routes({"/secret.png": secret}, host="::1") as canary6:
        ports = {"v4": canary.port, "v6": canary6.port}
        redirects = {path: redirect(target.format(**ports)) for path, target in REDIRECTS.items()}
        control = respond(body=png_bytes(seed=3), headers=[("Content-Type", "image/png")])
        async with routes({**redirects, "/good.png": control}, host=STAND_IN) as stand_in:
            api = start_api(settings)
            await create_job_schema(settings)
            worker = EnvWorkerProcess(
                settings, tmp_path / "ssrf-worker.log", extra_env={"STAND_IN_PUBLIC_ADDRESS": STAND_IN}
            )
            processes.append(worker)
            await wait_until_ready(api.base_url)

            # 1. The API: 422 naming url where it can tell, 202 for host names (no DNS at accept time).
            refused, accepted = [], []
            async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
                for template in [*LITERAL_TARGETS, *SCHEME_TARGETS, *HOST_NAME_TARGETS]:
                    url = template.format(**ports)
                    response = await client.post("/images", json={"url": url, "filter": "grayscale"})
                    if template in HOST_NAME_TARGETS:
                        assert response.status_code == 202, (url, response.text)
                        accepted.append(response.json()["id"])
                    else:
                        assert response.status_code == 422, (url, response.text)
                        assert [error["loc"] for error in response.json()["detail"]] == [["body", "url"]], url
                        refused.append(url)

            # 2. The worker on its own: every http(s) target and every redirect as an event, the schemes as raw
            # JSON (the event schema itself refuses them), and one good image from the stand-in.
            expected: dict[bytes, str] = {}
            records: list[Record] = []
            for _ in range(scale.pick(1, 5)):
                for template in [*LITERAL_TARGETS, *HOST_NAME_TARGETS]:
                    records.append(as_record(event := url_event(template.format(**ports))))
                    expected[str(event.image_id).encode()] = BLOCKED
                for path in REDIRECTS:
                    records.append(as_record(event := url_event(stand_in.url(path))))
                    expected[str(event.image_id).encode()] = BLOCKED
                for template in SCHEME_TARGETS:
                    key = b"scheme-" + uuid.uuid4().hex.encode()
                    records.append((key, _raw_event_with_url(template.format(**ports))))
                    expected[key] = UNDECODABLE
            good = url_event(stand_in.url("/good.png"))
            records.append(as_record(good))
            await produce(settings, records)
            expected.update({image_id.encode(): BLOCKED for image_id in accepted})

            # Every job whose event names a URL: those the API accepted are among ``expected`` by now.
            jobs = {key.decode() for key, error in expected.items() if error == BLOCKED} | {str(good.image_id)}
            drain_s = await drain(settings, jobs, timeout_s=scale.pick(90, 300))
            await eventually(lambda: _dead_letters_at_least(settings, len(expected)), what="every target dead-lettered")
            await eventually(lambda: offsets_all_committed(settings), what="every offset committed")
            stand_in_hits = collections.Counter(hit.path for hit in stand_in.hits)

    dead = await dead_letters(settings)
    figures = await count_figures(settings, jobs, images, drain_s=drain_s)
    line = record_figures(
        "ssrf-matrix",
        figures,
        refused_422=len(refused),
        worker_refused=len(dead),
        canary_hits=len(canary.hits) + len(canary6.hits),
        redirects_followed=sum(stand_in_hits[path] for path in REDIRECTS),
    )
    assert canary.hits == [], f"the guard let a request through to loopback: {line}"
    assert canary6.hits == [], f"the guard let a request through to IPv6 loopback: {line}"
    codes = {record.key: headers_of(record)["dlq.error.code"] for record in dead}
    assert collections.Counter(record.key for record in dead) == collections.Counter(list(expected)), line
    mismatched = {key: (codes[key], want) for key, want in expected.items() if codes[key] != want}
    assert mismatched == {}, f"refused for the wrong reason (the guard must refuse, not a timeout): {mismatched}"
    for record in dead:
        assert missing_metadata(record) == [], record.key
        message = headers_of(record)["dlq.error.message"]
        assert "non-public address" in message or "undecodable record" in message, message
    assert figures.done == 1, f"the positive control (the stand-in's good image) must be done: {line}"
    assert figures.failed == len(jobs) - 1, line
    assert figures.lost == 0, line
    assert stand_in_hits["/good.png"] == 1
    assert all(stand_in_hits[path] == scale.pick(1, 5) for path in REDIRECTS), "each redirect was asked once"
    assert worker.process.poll() is None, worker.log()


def _raw_event_with_url(url: str) -> bytes:
    document = json.loads(encode_event(url_event("http://x.example/a.png")))
    document["source"]["url"] = url
    return json.dumps(document).encode()


async def _dead_letters_at_least(settings: Settings, count: int) -> bool:
    return len(await dead_letters(settings)) >= count
