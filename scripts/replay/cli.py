"""``image-replay``: process events again, the Kafka way.

``image-replay reset`` moves a consumer group's committed offsets (as ``kafka-consumer-groups --reset-offsets``
does, dry run by default); ``image-replay redrive`` re-publishes dead letters to the main topic. Each
subcommand's module registers its own options and its ``run`` coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from core import tracing
from core.logs import configure_logging
from core.settings import InvalidSettings, load_settings
from scripts.replay import offset_reset, redrive


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-replay",
        description=(
            "Replay image_process events: reset a consumer group's offsets, or redrive dead letters. "
            "Dry run unless --execute. Settings (KAFKA_BOOTSTRAP_SERVERS, CONSUMER_GROUP, DATABASE_URL, ...) "
            "come from the environment; see README."
        ),
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    offset_reset.configure_parser(
        commands.add_parser(
            "reset",
            help="move a consumer group's offsets (dry run by default)",
            description=offset_reset.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    redrive.configure_parser(
        commands.add_parser(
            "redrive",
            help="re-publish dead letters to the main topic (dry run by default)",
            description=redrive.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # aiokafka logs each failed connection attempt; the command's own one-line error says what failed.
    configure_logging(args.log_level, quiet_kafka=True)
    try:
        settings = load_settings()
    except InvalidSettings as exc:
        print(f"image-replay: {exc}", file=sys.stderr)
        return 2
    tracing.start(settings, "image-replay")  # a redrive's span links to each dead letter's trace
    code: int = asyncio.run(args.run(settings, args))
    return code


if __name__ == "__main__":
    sys.exit(main())
