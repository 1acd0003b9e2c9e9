"""``image-kafka``: the local Kafka launcher's command line (start, stop, status, fetch, tool).

The broker lifecycles live in :mod:`scripts.kafka.local`; this module only parses arguments, prints and maps
expected failures to one-line messages and exit codes.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.arguments import positive_int
from scripts.kafka.acls import PipelineNames, grant, pipeline_acls
from scripts.kafka.local import (
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    KafkaCluster,
    KafkaLocalError,
    PropertyValue,
    broker_ids,
    fetch_jars,
    run_kafka_tool,
    stop_data_dir,
)
from scripts.kafka.security import SecureListener
from scripts.kafka.support import DEFAULT_KAFKA_VERSION

TOOL_ALIASES = {
    "topics": "org.apache.kafka.tools.TopicCommand",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "acls": "org.apache.kafka.tools.AclCommand",
}
SECURITY_DIR = "security"


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_start(args: argparse.Namespace) -> int:
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        raise KafkaLocalError(f"--set expects KEY=VALUE, got {bad[0]!r}")
    overrides: dict[str, PropertyValue] = dict(kv.split("=", 1) for kv in args.set)
    data_dir = Path(args.data_dir).resolve()
    secured_before = SecureListener.load(data_dir / SECURITY_DIR) is not None
    if any(data_dir.glob("node-*/kraft-logs/meta.properties")) and args.secure != secured_before:
        made = "with" if secured_before else "without"
        raise KafkaLocalError(
            f"the data in {data_dir} was made {made} --secure: start it so again, or use another --data-dir"
        )
    listener = None
    if args.secure:
        listener = SecureListener.prepare(data_dir / SECURITY_DIR, PipelineNames().users, host=args.host)
    cluster = KafkaCluster(
        args.data_dir,
        args.brokers,
        base_port=args.port,
        properties=overrides,
        heap=args.heap,
        version=args.kafka_version,
        host=args.host,
        security=listener,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill PID` stops as cleanly as Ctrl-C
    try:
        return _serve(cluster, detach=args.detach, timeout_s=args.timeout)
    except KeyboardInterrupt:
        print("stopping Kafka...", flush=True)
        cluster.stop()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(cluster: KafkaCluster, *, detach: bool, timeout_s: float) -> int:
    """Start, announce the address, then either detach or watch the nodes until interrupted."""
    cluster.start(timeout_s)
    print(
        f"Kafka {cluster.nodes[0].version} ready ({len(cluster.nodes)} broker(s), data in "
        f"{cluster.data_dir}); bootstrap servers: {cluster.bootstrap_servers}",
        flush=True,
    )
    if (listener := cluster.nodes[0].security) is not None:
        _secure_pipeline(cluster, listener)
    if detach:
        cluster.detach()
        print(f"detached; stop with: image-kafka stop --data-dir {cluster.data_dir}")
        return 0
    print("press Ctrl-C to stop", flush=True)
    while not (dead := [n for n in cluster.nodes if not n.running]):
        time.sleep(0.5)
    print(f"error: Kafka node {dead[0].node_id} exited with code {dead[0].returncode}", file=sys.stderr)
    print(dead[0].log_tail(), file=sys.stderr)
    cluster.stop()
    return 1


def _secure_pipeline(cluster: KafkaCluster, listener: SecureListener) -> None:
    """Grant the pipeline's ACLs and say how each service logs in."""
    first = cluster.nodes[0]
    grant(first.host, first.port, listener, pipeline_acls(PipelineNames()))
    print(f"SASL_SSL only, ACLs on; CA certificate: {listener.ca_file}")
    for user, path in listener.write_environment_files(cluster.bootstrap_servers).items():
        print(f"  {user}: set -a; . {path}; set +a")
    print(f"  Kafka's tools: --command-config {listener.tool_config()}", flush=True)


def _cmd_status(args: argparse.Namespace) -> int:
    root, up = Path(args.data_dir).resolve(), 0
    configs = sorted(root.glob("node-*/server.properties"))
    listener = SecureListener.load(root / SECURITY_DIR)
    for cfg in configs:
        props = dict(ln.split("=", 1) for ln in cfg.read_text().splitlines() if "=" in ln)
        address = props["advertised.listeners"].split("//", 1)[1]
        host, port = address.rsplit(":", 1)
        ids = broker_ids(host, int(port), **listener.probe_login() if listener else {})
        state = f"answering, live brokers {sorted(ids)}" if ids is not None else "not answering"
        up += ids is not None
        print(f"node {props['node.id']} at {address}: {state}")
    if not configs:
        print(f"no Kafka data in {root}")
    return 0 if configs and up == len(configs) else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-kafka",
        description="Run a real Apache Kafka (KRaft) broker or cluster locally from Maven jars, "
        "without Docker. Jars are cached in $KAFKA_LOCAL_CACHE or "
        "~/.cache/image-pipeline/kafka-<version>.",
    )
    parser.add_argument(
        "--kafka-version",
        default=None,
        help=f"Kafka version (default: $KAFKA_LOCAL_VERSION or {DEFAULT_KAFKA_VERSION})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start broker(s); foreground until Ctrl-C unless --detach")
    start.add_argument(
        "--port",
        type=int,
        default=9092,
        help="first broker port; brokers use PORT..PORT+N-1, controllers the next N "
        "(default 9092, controller 9093; 0 picks free ports)",
    )
    start.add_argument("--data-dir", default="./.kafka-data", help="default ./.kafka-data")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on and advertise (default 127.0.0.1)")
    start.add_argument(
        "--secure",
        action="store_true",
        help="SASL_SSL only (a CA made at start, SCRAM logins) with ACLs for the image-api, image-worker and "
        "image-replay users; prints where each one's settings are",
    )
    start.add_argument("--brokers", type=positive_int, default=1, help="number of nodes (default 1)")
    start.add_argument("--detach", action="store_true", help="return once ready, leave running")
    start.add_argument("--heap", default="512m", help="JVM heap per node (default 512m)")
    start.add_argument(
        "--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, help="seconds to wait for readiness (default 60)"
    )
    start.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a server property (repeatable)"
    )
    stop = sub.add_parser("stop", help="stop brokers started with --detach (via pid files)")
    stop.add_argument("--data-dir", default="./.kafka-data")
    stop.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S)
    status = sub.add_parser("status", help="show whether the nodes in a data dir answer")
    status.add_argument("--data-dir", default="./.kafka-data")
    fetch = sub.add_parser("fetch", help="only download/cache the jars (mvn on first run)")
    fetch.add_argument("--with-tools", action="store_true", help="also kafka-tools (CLI tools)")
    tool = sub.add_parser(
        "tool",
        help="run a Kafka tool class with the tools classpath, e.g. "
        "'tool topics --bootstrap-server 127.0.0.1:9092 --list'",
    )
    tool.add_argument("main_class", help=f"class name or alias: {', '.join(TOOL_ALIASES)}")
    tool.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the tool")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "start":
            return _cmd_start(args)
        if args.command == "stop":
            print(f"stopped {stop_data_dir(args.data_dir, args.timeout)} Kafka process(es)")
            return 0
        if args.command == "status":
            return _cmd_status(args)
        if args.command == "fetch":
            print(fetch_jars(args.kafka_version, tools=args.with_tools))
            return 0
        main_class = TOOL_ALIASES.get(args.main_class, args.main_class)
        return run_kafka_tool(
            main_class, args.args, version=args.kafka_version, capture=False, check=False, timeout_s=None
        ).returncode
    except KafkaLocalError as exc:
        print(f"image-kafka: error: {exc.summary}", file=sys.stderr)
        if exc.details:
            print(exc.details if args.verbose else "(run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
