"""Support code for :mod:`scripts.kafka.local`: the jar cache, Java discovery, the tool runner and small probes.

Jars are resolved from Maven Central once and cached; everything else here (port checks, the
Metadata probe, pid checks) is stateless, so :mod:`scripts.kafka.local` can stay about broker lifecycles and
the CLI. Stdlib only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
SCALA_BINARY_VERSION = "2.13"
SLF4J_VERSION = "1.7.36"  # Kafka 4.0-4.2 are built against the SLF4J 1.x API.
# The log4j2 version each Kafka release tarball ships; others fall back to the 4.1.1 one.
LOG4J_VERSIONS = {
    "4.0.0": "2.24.3",
    "4.0.1": "2.24.3",
    "4.0.2": "2.25.3",
    "4.1.0": "2.24.3",
    "4.1.1": "2.24.3",
    "4.1.2": "2.25.3",
}
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA_MAJOR = 17
RESOURCE_DIR = Path(__file__).resolve().parent
TOOLS_LOG4J_CONFIG = RESOURCE_DIR / "tools-log4j2.xml"
_MARKER = ".complete"
_MVN_TIMEOUT_S = 1800.0
_METADATA_API_KEY, _METADATA_VERSION = 3, 4  # v4 is the oldest Metadata version Kafka 4.x serves
_SASL_HANDSHAKE_API_KEY, _SASL_AUTHENTICATE_API_KEY, _CREATE_ACLS_API_KEY = 17, 36, 30
_LITERAL_PATTERN, _PREFIXED_PATTERN, _ALLOW = 3, 4, 3  # Kafka's PatternType and AclPermissionType codes


class KafkaLocalError(RuntimeError):
    """An expected failure (missing Java/Maven, download failure, busy port, broker death).

    ``summary`` is one line the CLI prints as is; ``str()`` appends ``details`` (log tails, Maven
    output) so a failing test shows why the broker did not come up.
    """

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary)
        self.summary = summary
        self.details = details

    def __str__(self) -> str:
        return f"{self.summary}\n{self.details}" if self.details else self.summary


def kafka_version(version: str | None = None) -> str:
    """Pick the Kafka version: explicit argument, else ``KAFKA_LOCAL_VERSION``, else the pin."""
    return version or os.environ.get("KAFKA_LOCAL_VERSION") or DEFAULT_KAFKA_VERSION


def cache_dir(version: str | None = None) -> Path:
    """Where jars for one version live; outside the work tree so every checkout shares them."""
    env = os.environ.get("KAFKA_LOCAL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "image-pipeline" / f"kafka-{kafka_version(version)}"


def _is_complete(lib_dir: Path, version: str) -> bool:
    marker = lib_dir / _MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == version


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise fetches (e.g. parallel pytest workers) so only one process downloads."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".fetch.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _render_pom(artifact: str, version: str, flavour: str) -> str:
    template = (RESOURCE_DIR / "pom.xml.in").read_text(encoding="utf-8")
    values = {
        "ARTIFACT": artifact,
        "KAFKA_VERSION": version,
        "FLAVOUR": flavour,
        "SLF4J_VERSION": SLF4J_VERSION,
        "LOG4J_VERSION": LOG4J_VERSIONS.get(version, LOG4J_VERSIONS[DEFAULT_KAFKA_VERSION]),
    }
    return re.sub(r"@([A-Z0-9_]+)@", lambda m: values[m.group(1)], template)


def _mvn_reason(output: str) -> str:
    """The informative part of Maven's first error ("X was not found in ..."), on one line."""
    for line in output.splitlines():
        if line.startswith("[ERROR]") and "Failed to execute goal" in line:
            reason = line.split(" -> [Help", 1)[0]
            return re.sub(r"^.*Could not resolve dependencies for project [^ ]+: ", "", reason)[:300]
    return ""


def _resolve(artifact: str, version: str, target: Path, flavour: str) -> None:
    """Run copy-dependencies into a temp dir, then rename it to ``target`` (never half a cache)."""
    mvn = shutil.which(os.environ.get("KAFKA_LOCAL_MVN", "mvn"))
    if mvn is None:
        raise KafkaLocalError(
            "Maven (mvn) not found on PATH; install it (apt-get install maven) or point KAFKA_LOCAL_MVN at it"
        )
    coordinate = f"org.apache.kafka:{artifact}:{version}"
    with tempfile.TemporaryDirectory(prefix=f".{flavour}-tmp-", dir=target.parent) as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_render_pom(artifact, version, flavour), encoding="utf-8")
        out_dir = Path(tmp) / "lib"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-U",  # re-check Central: Maven caches a failed lookup for a day otherwise
            "-Dstyle.color=never",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
        ]
        log.info("resolving %s and its runtime dependencies with Maven", coordinate)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False, cwd=tmp)
        except subprocess.TimeoutExpired as exc:
            raise KafkaLocalError(f"mvn timed out after {_MVN_TIMEOUT_S:.0f} s resolving {coordinate}") from exc
        output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or not (out_dir / f"{artifact}-{version}.jar").is_file():
            raise KafkaLocalError(
                f"could not resolve {coordinate} from Maven Central (is that version published?): "
                f"{_mvn_reason(output) or f'mvn exited with code {proc.returncode}'}",
                "\n".join(output.splitlines()[-25:]),
            )
        (out_dir / _MARKER).write_text(version + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        out_dir.rename(target)


def jars_cached(version: str | None = None) -> bool:
    """Whether the broker's jars for ``version`` are cached, so starting it needs no download."""
    version = kafka_version(version)
    return _is_complete(cache_dir(version) / "lib", version)


def fetch_jars(version: str | None = None, *, tools: bool = False) -> Path:
    """Return the broker lib dir for ``version``, downloading it (and tools) only if not cached.

    A cached, complete dir makes this a few ``stat`` calls: no Maven, no network.
    """
    version = kafka_version(version)
    root = cache_dir(version)
    lib, tools_lib = root / "lib", root / "tools-lib"
    wanted = [(lib, f"kafka_{SCALA_BINARY_VERSION}", "broker")]
    if tools:
        wanted.append((tools_lib, "kafka-tools", "tools"))
    if all(_is_complete(d, version) for d, _, _ in wanted):
        return lib
    with _locked(root):
        for stale in root.glob(".*-tmp-*"):  # left by an interrupted fetch; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        for target, artifact, flavour in wanted:
            if not _is_complete(target, version):
                _resolve(artifact, version, target, flavour)
        if tools:
            # Same-named jars are already on the broker classpath: drop the duplicates.
            for jar in tools_lib.glob("*.jar"):
                if (lib / jar.name).is_file():
                    jar.unlink()
    return lib


def classpath(version: str | None = None, *, tools: bool = False) -> str:
    """Java classpath (wildcards) for the broker, or the tools (tools jars first, then broker)."""
    lib = fetch_jars(version, tools=tools)
    parts = [lib.parent / "tools-lib" / "*"] if tools else []
    return os.pathsep.join(str(p) for p in [*parts, lib / "*"])


@functools.lru_cache(maxsize=4)
def find_java(java: str | None = None) -> str:
    """Locate a Java 17+ executable: argument, ``KAFKA_LOCAL_JAVA``, ``JAVA_HOME``, then PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = (
        java or os.environ.get("KAFKA_LOCAL_JAVA") or (str(Path(java_home) / "bin" / "java") if java_home else "java")
    )
    found = shutil.which(candidate)
    if found is None:
        raise KafkaLocalError(
            f"Java not found ({candidate}); Kafka needs Java {MIN_JAVA_MAJOR}+ "
            "(apt-get install openjdk-17-jre-headless)"
        )
    proc = subprocess.run([found, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise KafkaLocalError(f"{found} is Java {major or '?'}; Kafka needs Java {MIN_JAVA_MAJOR}+")
    return found


def run_kafka_tool(
    main_class: str,
    args: Sequence[str] = (),
    *,
    version: str | None = None,
    tools: bool = True,
    heap: str = "256m",
    timeout_s: float | None = 120.0,
    capture: bool = True,
    check: bool = True,
    java: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a Kafka main class (e.g. ``ConsumerGroupCommand``) with the tools classpath.

    ``tools=False`` uses only the broker jars (enough for ``kafka.tools.StorageTool``).
    Raises ``KafkaLocalError`` on a non-zero exit when ``check`` is true.
    """
    cmd = [
        find_java(java),
        f"-Xmx{heap}",
        # Tools are short-lived: C1 only and serial GC start ~30% faster (3 formats at once on 2 cores).
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={TOOLS_LOG4J_CONFIG}",
        "-cp",
        classpath(version, tools=tools),
        main_class,
        *args,
    ]
    log.debug("running %s", cmd)
    proc = subprocess.run(
        cmd, capture_output=capture, text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-25:])
        short = main_class.rsplit(".", 1)[-1]
        raise KafkaLocalError(f"{short} exited with code {proc.returncode}", tail)
    return proc


def new_cluster_id() -> str:
    """A Kafka-style cluster id: 16 random bytes, base64url without padding (22 chars)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka avoids these too: they look like CLI flags
            return cluster_id


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Pick ``count`` distinct free TCP ports (all held open together, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def ensure_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Kafka binds: TIME_WAIT ok
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise KafkaLocalError(f"port {port} on {host} is already in use ({exc.strerror})") from exc


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _exchange(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """Send one request (classic header, client id ``kafka-local``); return the response body after its header."""
    client_id = b"kafka-local"
    request = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    response = _recv_exact(sock, size)
    if struct.unpack_from(">i", response)[0] != correlation_id:
        raise ConnectionError("response out of order")
    return response[4:]


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _log_in(sock: socket.socket, user: str, password: str) -> None:
    """SASL PLAIN over Kafka's SaslHandshake v1 and SaslAuthenticate v0 (the broker's own login mechanism)."""
    (error,) = struct.unpack_from(">h", _exchange(sock, _SASL_HANDSHAKE_API_KEY, 1, 2, _string("PLAIN")))
    token = b"\0" + user.encode() + b"\0" + password.encode()
    answer = _exchange(sock, _SASL_AUTHENTICATE_API_KEY, 0, 3, struct.pack(">i", len(token)) + token)
    if error or struct.unpack_from(">h", answer)[0]:
        raise ConnectionError("SASL login refused")


@contextlib.contextmanager
def _connection(
    host: str, port: int, timeout_s: float, tls: ssl.SSLContext | None, login: tuple[str, str] | None
) -> Iterator[socket.socket]:
    """A socket to the broker, over TLS and logged in with PLAIN when the listener asks for it."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout_s))
        if tls:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=host))
        if login:
            _log_in(sock, *login)
        yield sock


def broker_ids(
    host: str,
    port: int,
    timeout_s: float = 2.0,
    *,
    tls: ssl.SSLContext | None = None,
    login: tuple[str, str] | None = None,
) -> list[int] | None:
    """Node ids of the live (unfenced) brokers a broker reports, or None if it does not answer.

    A raw Metadata v4 request over TCP (over TLS and after a PLAIN login for a secured listener): stdlib only, and
    stricter than "port open", because a KRaft broker lists itself only once it has caught up with the quorum and
    been unfenced.
    """
    body = struct.pack(">ib", 0, 0)  # topics: empty array; no auto-creation
    try:
        with _connection(host, port, timeout_s, tls, login) as sock:
            data = _exchange(sock, _METADATA_API_KEY, _METADATA_VERSION, 1, body)
        _throttle_ms, count = struct.unpack_from(">ii", data, 0)
        offset, ids = 8, []
        for _ in range(count):
            node_id, host_len = struct.unpack_from(">ih", data, offset)
            offset += 6 + host_len
            _port, rack_len = struct.unpack_from(">ih", data, offset)
            offset += 6 + max(rack_len, 0)
            ids.append(node_id)
    except (OSError, struct.error):
        return None
    return ids


AclRule = tuple[int, str, bool, str, int]  # resource type, resource name, prefixed, principal, operation


def create_acls(
    host: str,
    port: int,
    rules: Sequence[AclRule],
    *,
    tls: ssl.SSLContext | None = None,
    login: tuple[str, str] | None = None,
    timeout_s: float = 10.0,
) -> list[str]:
    """ALLOW ``rules`` from any host with one CreateAcls v1 request; one error message per rule ("" if added).

    What Kafka's ``kafka-acls --add`` sends, without a JVM per call (seconds each; the secured broker needs a
    dozen rules).
    """
    body = struct.pack(">i", len(rules))
    for resource_type, name, prefixed, principal, operation in rules:
        pattern = _PREFIXED_PATTERN if prefixed else _LITERAL_PATTERN
        body += struct.pack(">b", resource_type) + _string(name) + struct.pack(">b", pattern)
        body += _string(principal) + _string("*") + struct.pack(">bb", operation, _ALLOW)
    try:
        with _connection(host, port, timeout_s, tls, login) as sock:
            data = _exchange(sock, _CREATE_ACLS_API_KEY, 1, 4, body)
        _throttle_ms, count = struct.unpack_from(">ii", data, 0)
        offset, errors = 8, []
        for _ in range(count):
            code, length = struct.unpack_from(">hh", data, offset)
            offset += 4
            message = data[offset : offset + max(length, 0)].decode("utf-8", "replace")
            offset += max(length, 0)
            errors.append(f"error {code}: {message}" if code else "")
    except (OSError, struct.error) as exc:
        raise KafkaLocalError(f"could not add ACLs on {host}:{port}: {exc}") from exc
    return errors


def tail_file(path: Path, lines: int) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64 * 1024))
        text = handle.read().decode("utf-8", "replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text)


def pid_runs_kafka(pid: int, config: Path) -> bool:
    """True if ``pid`` is a live broker started on ``config`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"kafka.Kafka" in cmdline and str(config).encode() in cmdline


def stop_data_dir(data_dir: str | Path, timeout_s: float = 30.0) -> int:
    """Stop brokers started elsewhere (``start --detach``) by their pid files; returns how many."""
    root = Path(data_dir).resolve()
    pids: dict[int, Path] = {}
    for pid_file in [root / "kafka.pid", *sorted(root.glob("node-*/kafka.pid"))]:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if pid_runs_kafka(pid, pid_file.parent / "server.properties"):
                pids[pid] = pid_file.parent / "server.properties"
                os.kill(pid, signal.SIGTERM)
            pid_file.unlink()
    deadline = time.monotonic() + timeout_s
    while alive := [p for p, cfg in pids.items() if pid_runs_kafka(p, cfg)]:
        if time.monotonic() >= deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    return len(pids)
