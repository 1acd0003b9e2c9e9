"""Run real Apache Kafka brokers (KRaft, broker+controller per process) from cached Maven jars.

Used by the pytest fixtures, by developers (``image-kafka start``, see :mod:`scripts.kafka.cli`) and by
fault-injection tests that stop, kill and restart brokers. Needs only the stdlib, Java 17+ and,
for the first run, Maven: no Docker, no virtualenv.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from scripts.kafka.security import SecureListener
from scripts.kafka.support import (
    RESOURCE_DIR,
    KafkaLocalError,
    broker_ids,
    classpath,
    ensure_port_free,
    fetch_jars,
    find_java,
    free_ports,
    kafka_version,
    new_cluster_id,
    pid_runs_kafka,
    run_kafka_tool,
    stop_data_dir,
    tail_file,
)

__all__ = [
    "KafkaCluster",
    "KafkaLocalError",
    "KafkaNode",
    "broker_ids",
    "fetch_jars",
    "free_ports",
    "new_cluster_id",
    "run_kafka_tool",
    "stop_data_dir",
]

log = logging.getLogger(__name__)

PropertyValue = str | int | float | bool
BROKER_LOG4J_CONFIG = RESOURCE_DIR / "log4j2.xml"
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 30.0
_POLL_INTERVAL_S = 0.1
# Kafka's own launcher GC flags (kafka-run-class.sh), heap given separately.
_JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
_RUNNING: set[KafkaNode] = set()  # stopped at interpreter exit so no broker outlives its owner


class KafkaNode:
    """One Kafka process in KRaft combined mode (broker + controller) on its own data dir.

    Ports are fixed at construction (``None``/0 picks free ones) so a restart after ``stop()`` or
    ``kill()`` comes back on the same address with the same data; storage is formatted once.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        node_id: int = 1,
        port: int | None = None,
        controller_port: int | None = None,
        host: str = "127.0.0.1",
        voters: str | None = None,
        cluster_id: str | None = None,
        properties: Mapping[str, PropertyValue] | None = None,
        heap: str = "512m",
        jvm_args: Sequence[str] = (),
        version: str | None = None,
        java: str | None = None,
        security: SecureListener | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.node_id, self.host, self.heap, self.security = node_id, host, heap, security
        picked = iter(free_ports(2, host) if not (port and controller_port) else [])
        self.port = port or next(picked)
        self.controller_port = controller_port or next(picked)
        self.voters = voters or f"{node_id}@{host}:{self.controller_port}"
        self.overrides: dict[str, PropertyValue] = dict(properties or {})
        self.jvm_args, self.version, self.java = list(jvm_args), kafka_version(version), java
        self._cluster_id = cluster_id
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"KafkaNode(id={self.node_id}, {self.bootstrap_servers}, pid={self.pid})"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs`` (partition data and KRaft metadata)."""
        return self.data_dir / "kraft-logs"

    @property
    def out_path(self) -> Path:
        """Broker stdout+stderr: WARN and above, JVM errors, fatal startup errors."""
        return self.data_dir / "broker.out"

    @property
    def server_log_path(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def cluster_id(self) -> str:
        """The formatted cluster id if storage exists, else the one that will be formatted."""
        meta = self.log_dir / "meta.properties"
        if meta.is_file():
            for line in meta.read_text(encoding="utf-8").splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        if self._cluster_id is None:
            self._cluster_id = new_cluster_id()
        return self._cluster_id

    @property
    def is_formatted(self) -> bool:
        return (self.log_dir / "meta.properties").is_file()

    def properties(self) -> dict[str, str]:
        """The effective ``server.properties``: single-node defaults, then the overrides."""
        listeners = f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
        props: dict[str, PropertyValue] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": self.voters,
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": 1,
            "auto.create.topics.enable": False,
            "group.initial.rebalance.delay.ms": 0,
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            # How often the broker aborts transactions past their timeout (default 10 s): an API process killed
            # mid-transaction stalls read_committed readers of its partitions until then.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": 1000,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            # After kill -9 the controller refuses the restarted broker (DUPLICATE_BROKER_REGISTRATION)
            # until the old session expires (default 9 s); a short one also fences dead brokers sooner.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
        }
        if self.security:
            props.update(self.security.broker_properties(self.port, self.controller_port))
        props.update(self.overrides)
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in props.items()}

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={v.replace(chr(92), chr(92) * 2)}" for k, v in self.properties().items()]
        # Private: a secured node's properties hold its passwords.
        descriptor = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as config:
            config.write("# written by scripts/kafka/local.py\n" + "\n".join(lines) + "\n")
        return self.config_path

    def format_storage(self) -> None:
        """Format storage with the cluster id unless already done (restarts keep their data)."""
        self.write_config()
        if self.is_formatted:
            return
        log.info("formatting node %s storage in %s", self.node_id, self.log_dir)
        scram_users = self.security.format_arguments() if self.security else []
        # Static controller.quorum.voters: no --standalone (4.1.1 rejects it in that mode).
        run_kafka_tool(
            "kafka.tools.StorageTool",
            ["format", "-t", self.cluster_id, "-c", str(self.config_path), *scram_users],
            version=self.version,
            tools=False,
            java=self.java,
        )

    def launch(self) -> None:
        """Start the JVM without waiting for readiness (a cluster launches all nodes first)."""
        if self.running:
            raise KafkaLocalError(f"Kafka node {self.node_id} is already running (pid {self.pid})")
        with contextlib.suppress(OSError, ValueError):
            other = int((self.data_dir / "kafka.pid").read_text())
            if pid_runs_kafka(other, self.config_path):
                raise KafkaLocalError(f"a Kafka broker already runs on {self.data_dir} (pid {other})")
        java, cp = find_java(self.java), classpath(self.version)
        for port in (self.port, self.controller_port):
            ensure_port_free(self.host, port)
        self.format_storage()
        (self.data_dir / "logs").mkdir(exist_ok=True)
        cmd = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={BROKER_LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            *self.jvm_args,
            "-cp",
            cp,
            "kafka.Kafka",
            str(self.config_path),
        ]
        with self.out_path.open("ab") as out:
            out.write(f"=== kafka-local: starting node {self.node_id} at {time.ctime()}\n".encode())
            out.flush()
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the broker in order.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        (self.data_dir / "kafka.pid").write_text(f"{self._proc.pid}\n", encoding="utf-8")
        _RUNNING.add(self)
        log.info("started Kafka node %s (pid %s) on %s", self.node_id, self._proc.pid, self.bootstrap_servers)

    def wait_ready(self, timeout_s: float = DEFAULT_START_TIMEOUT_S, expect_ids: Sequence[int] = ()) -> None:
        """Poll until this broker lists itself (and ``expect_ids``) as live; raise with log tails."""
        deadline = time.monotonic() + timeout_s
        wanted = {self.node_id, *expect_ids}
        while True:
            if self._proc is None:
                raise KafkaLocalError(f"Kafka node {self.node_id} was never started")
            if (code := self._proc.poll()) is not None:
                raise KafkaLocalError(
                    f"Kafka node {self.node_id} exited with code {code} during startup (logs in {self.data_dir})",
                    self.log_tail(),
                )
            ids = self.live_brokers(timeout_s=1.0)
            if ids is not None and wanted <= set(ids):
                return
            if time.monotonic() >= deadline:
                raise KafkaLocalError(
                    f"Kafka node {self.node_id} not ready after {timeout_s:g} s (logs in {self.data_dir})",
                    self.log_tail(),
                )
            time.sleep(_POLL_INTERVAL_S)

    def live_brokers(self, timeout_s: float = 2.0) -> list[int] | None:
        """The live brokers this node reports (logging in as the admin if secured), or None if it does not answer."""
        return broker_ids(self.host, self.port, timeout_s, **self.security.probe_login() if self.security else {})

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> Self:
        """Format if needed, start, and wait until the broker answers; kill it if it never does."""
        self.launch()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.kill()
            raise
        return self

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting; see ``stop``."""
        if self.running and self._proc:
            self._proc.send_signal(signal.SIGTERM)

    def reap(self, timeout_s: float | None) -> int | None:
        """Wait for the process to exit, SIGKILL it after ``timeout_s``; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        try:
            proc.wait(timeout=None if timeout_s is None else max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            log.warning("Kafka node %s ignored SIGTERM for %.0f s: killing it", self.node_id, timeout_s)
            proc.kill()
            proc.wait()
        _RUNNING.discard(self)
        with contextlib.suppress(OSError):
            (self.data_dir / "kafka.pid").unlink()
        return proc.returncode

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """Graceful shutdown: SIGTERM, bounded wait, then SIGKILL."""
        self.terminate()
        return self.reap(timeout_s)

    def kill(self) -> int | None:
        """SIGKILL, as a crash would (no flush, no controlled shutdown)."""
        if self.running and self._proc:
            self._proc.kill()
        return self.reap(None)  # SIGKILL cannot be ignored: wait without a bound

    def restart(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> Self:
        self.stop()
        return self.start(timeout_s)

    def detach(self) -> None:
        """Leave the broker running after this Python process exits (``start --detach``)."""
        _RUNNING.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(t for t in (tail_file(self.out_path, lines), tail_file(self.server_log_path, lines)) if t)

    def __enter__(self) -> Self:
        return self.start() if not self.running else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class KafkaCluster:
    """``size`` KafkaNodes sharing one cluster id and one controller voters list.

    Defaults suit fault tests: replication factor min(size, 3) for internal and new topics,
    ``min.insync.replicas`` 2 when size >= 3 (so acks=all on an RF-1 topic fails: create topics
    with RF >= 2 or override it). Nodes live in ``data_dir/node-<id>``. Reach a node
    with ``cluster.node(id)`` to stop, kill or restart it alone.
    """

    def __init__(
        self,
        data_dir: str | Path,
        size: int = 3,
        *,
        base_port: int | None = None,
        host: str = "127.0.0.1",
        properties: Mapping[str, PropertyValue] | None = None,
        heap: str = "512m",
        jvm_args: Sequence[str] = (),
        version: str | None = None,
        java: str | None = None,
        security: SecureListener | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.data_dir = Path(data_dir).resolve()
        # Broker ports first, then controller ports: 9092 alone gives 9092 + controller 9093.
        ports = list(range(base_port, base_port + 2 * size)) if base_port else free_ports(2 * size, host)
        voters = ",".join(f"{i + 1}@{host}:{ports[size + i]}" for i in range(size))
        rf, min_isr = min(size, 3), (2 if size >= 3 else 1)
        props: dict[str, PropertyValue] = {
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "default.replication.factor": rf,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "min.insync.replicas": min_isr,
        }
        props.update(properties or {})
        self.nodes = [
            KafkaNode(
                self.data_dir / f"node-{i + 1}",
                node_id=i + 1,
                port=ports[i],
                controller_port=ports[size + i],
                host=host,
                voters=voters,
                properties=props,
                heap=heap,
                jvm_args=jvm_args,
                version=version,
                java=java,
                security=security,
            )
            for i in range(size)
        ]
        formatted = [n.cluster_id for n in self.nodes if n.is_formatted]
        self.cluster_id = formatted[0] if formatted else new_cluster_id()
        for node in self.nodes:
            node._cluster_id = self.cluster_id

    def __repr__(self) -> str:
        return f"KafkaCluster({self.bootstrap_servers}, running={[n.running for n in self.nodes]})"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.bootstrap_servers for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> Self:
        """Start every stopped node and wait until each sees all brokers live."""
        deadline = time.monotonic() + timeout_s
        todo = [n for n in self.nodes if not n.running]
        try:
            fetch_jars(self.nodes[0].version)
            with ThreadPoolExecutor(max_workers=len(todo) or 1) as pool:
                list(pool.map(KafkaNode.format_storage, todo))  # one JVM each: run them side by side
            for node in todo:
                node.launch()
            ids = [n.node_id for n in self.nodes]
            for node in self.nodes:
                node.wait_ready(max(deadline - time.monotonic(), 0.0), expect_ids=ids)
        except BaseException:
            for node in todo:  # leave nodes that were already up alone
                node.kill()
            raise
        return self

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGTERM all nodes at once (the quorum stays up while brokers shut down), then reap."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.reap(deadline - time.monotonic())

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def detach(self) -> None:
        for node in self.nodes:
            node.detach()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    nodes = list(_RUNNING)
    for node in nodes:
        node.terminate()
    for node in nodes:
        node.reap(10.0)
