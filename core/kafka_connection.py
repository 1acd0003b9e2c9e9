"""How every Kafka client of the pipeline reaches the brokers: the addresses, TLS and the SASL login.

Each ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient`` here is built with
``**kafka_connection(settings)``, so the API, the workers, ``image-replay`` and the benchmarks reach a secured
broker (a managed Kafka with ``SASL_SSL``, the launcher's ``--secure`` broker) the same way. The settings were
checked for completeness when loaded (``core.settings.kafka_security_problems``).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from core.settings import Settings


def kafka_connection(settings: Settings) -> dict[str, Any]:
    """The keyword arguments every aiokafka client takes for where Kafka is and how to log in."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = tls_context(settings)
    if settings.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_oauth_token_file is not None:
        options["sasl_oauth_token_provider"] = TokenFile(settings.kafka_sasl_oauth_token_file)
    if settings.kafka_sasl_username is not None and settings.kafka_sasl_password is not None:
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Trust ``KAFKA_SSL_CAFILE`` (or the system's CAs) and present the client certificate if one is set."""
    key_password = settings.kafka_ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        password=key_password.get_secret_value() if key_password else None,
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


class TokenFile(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka.abc is untyped
    """OAUTHBEARER tokens read from a file at every login, so whoever refreshes the file refreshes the login."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def token(self) -> str:
        text = await asyncio.to_thread(self._path.read_text, encoding="utf-8")
        if not text.strip():
            raise ValueError(f"KAFKA_SASL_OAUTH_TOKEN_FILE {self._path} is empty")
        return text.strip()
