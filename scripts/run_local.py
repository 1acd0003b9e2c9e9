"""Run the whole pipeline on this machine: a real Kafka broker, the API and workers, and one sample job.

This is the README's "run it" command. It needs no Docker: the broker is Apache Kafka itself, started from
its Maven jars by ``scripts/kafka/local.py``. With ``--once`` it exits after the sample job finished (0 when it
is done), which is how CI checks that the command works; otherwise it serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from scripts.kafka.local import KafkaLocalError, KafkaNode, broker_ids
from scripts.kafka.support import jars_cached

READY_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.25
FINAL_STATES = {"done", "failed", "cancelled"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.run_local",
        description="Start a local Kafka broker, the API and workers, then send a sample image through.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="state folder (default: %(default)s)")
    parser.add_argument("--kafka-port", type=int, default=9092, help="broker port (default: %(default)s)")
    parser.add_argument("--api-port", type=int, default=8000, help="API port (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    parser.add_argument("--filter", default="sepia", help="filter of the sample job (default: %(default)s)")
    parser.add_argument("--once", action="store_true", help="exit after the sample job instead of serving")
    args = parser.parse_args(argv)

    data_dir = args.data_dir.resolve()
    try:
        with contextlib.ExitStack() as stack:
            bootstrap = stack.enter_context(_broker(data_dir / "kafka", args.kafka_port))
            env = os.environ | {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{data_dir / 'images.db'}"),
                "STORAGE_DIR": os.environ.get("STORAGE_DIR", str(data_dir / "blobs")),
                "AUTH_DISABLED": os.environ.get("AUTH_DISABLED", "true"),
            }
            if env["AUTH_DISABLED"] == "true":
                print("Local demo: the API runs without API keys (AUTH_DISABLED=true); never expose it like this.")
            _migrate(env)
            api_url = f"http://127.0.0.1:{args.api_port}"
            api = stack.enter_context(_process(["image-api", "--port", str(args.api_port)], env, data_dir / "api.log"))
            _wait_ready(api_url, api, data_dir / "api.log")
            worker = _venv_command("image-worker")
            for index in range(args.workers if worker else 0):
                stack.enter_context(_process(["image-worker"], env, data_dir / f"worker-{index}.log"))
            print(f"API ready at {api_url} (docs: {api_url}/docs); broker at {bootstrap}; logs in {data_dir}")
            print(f"Console: {api_url}/console (submit, watch and fix jobs in a browser)")
            state = _send_sample(api_url, args.filter, wait_for_final=worker is not None)
            if args.once:
                sys.exit(0 if state == ("done" if worker else "queued") else 1)
            print("Serving; press Ctrl-C to stop.")
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # so they end the wait, not the process
            signal.sigwait(stop_signals)
    except KafkaLocalError as exc:
        sys.exit(f"run_local: {exc}")
    except KeyboardInterrupt:
        pass


@contextlib.contextmanager
def _broker(data_dir: Path, port: int) -> Iterator[str]:
    """Use a broker already answering on ``port``, or start one for the duration of the block."""
    if broker_ids("127.0.0.1", port, timeout_s=1.0) is not None:
        print(f"Using the Kafka broker already running on 127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
        return
    if jars_cached():
        print(f"Starting Kafka on 127.0.0.1:{port}...")
    else:
        print(f"Starting Kafka on 127.0.0.1:{port} (downloading its jars from Maven Central first, once)...")
    with KafkaNode(data_dir, port=port, controller_port=port + 1) as node:
        yield node.bootstrap_servers


def _migrate(env: dict[str, str]) -> None:
    """Bring the demo's database to this version's schema, as an operator runs image-migrate before a release:
    the API and the workers refuse to start on any other."""
    executable = _venv_command("image-migrate")
    if executable is None:
        raise KafkaLocalError("image-migrate is not installed: run `make install` first")
    done = subprocess.run([executable], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KafkaLocalError(done.stderr.strip())
    print(done.stdout.strip())


def _venv_command(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    executable = _venv_command(command[0])
    if executable is None:
        raise KafkaLocalError(f"{command[0]} is not installed: run `make install` first")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen([executable, *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(api_url: str, api: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait for ``/readyz``; an API process that exits meanwhile (a port in use, a bad setting) ends the wait."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if api.poll() is not None:
            last_lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise KafkaLocalError(f"the API exited with code {api.returncode}: " + " | ".join(last_lines))
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(POLL_INTERVAL_S)
    raise KafkaLocalError(f"the API at {api_url} was not ready within {READY_TIMEOUT_S:g} s")


def _send_sample(api_url: str, image_filter: str, *, wait_for_final: bool) -> str:
    response = httpx.post(
        f"{api_url}/images",
        files={"file": ("sample.png", _sample_png(), "image/png")},
        data={"filter": image_filter},
        timeout=30,
    )
    print(f"POST /images -> {response.status_code} {response.text}")
    if response.status_code != 202:
        return "rejected"
    status_url = f"{api_url}{response.json()['status_url']}"
    state = "queued"
    deadline = time.monotonic() + (JOB_TIMEOUT_S if wait_for_final else 0)
    while True:
        job = httpx.get(status_url, timeout=10).json()
        if job["status"] != state or job["status"] in FINAL_STATES:
            state = job["status"]
            print(f"GET {status_url} -> {state}" + (f" ({job['error']})" if job.get("error") else ""))
        if state in FINAL_STATES or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    if state == "done":
        print(f"Result: {api_url}{job['result_url']}")
    return state


def _sample_png() -> bytes:
    image = Image.new("RGB", (320, 200), (40, 110, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((110, 40, 210, 140), fill=(250, 200, 40))
    draw.rectangle((0, 160, 320, 200), fill=(30, 150, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
