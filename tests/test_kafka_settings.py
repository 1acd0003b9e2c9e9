"""The Kafka client settings: incomplete or contradictory security settings stop start-up, and every client gets
the same TLS and login options."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from consumer.callbacks import callback_engine_settings
from core.kafka_connection import TokenFile, kafka_connection
from core.settings import InvalidSettings, Settings, load_settings
from producer.publisher import TRANSACTIONAL_ID_PREFIX
from scripts.kafka.acls import PipelineNames
from scripts.kafka.cli import main as kafka_cli

HERE = Path(__file__)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": "w",
            },
            "KAFKA_SASL_PASSWORD is needed with KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER"},
            "KAFKA_SASL_OAUTH_TOKEN_FILE is needed with KAFKA_SASL_MECHANISM=OAUTHBEARER",
        ),
        (
            {"KAFKA_SASL_USERNAME": "w"},
            "KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not log in",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SSL_CAFILE": str(HERE)},
            "KAFKA_SSL_CAFILE is set but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": str(HERE)},
            "KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(HERE)}, "KAFKA_SSL_CAFILE: cannot load"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(HERE)}, "cannot load the key pair"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL: Input should be"),
        ({"KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "KAFKA_SSL_CAFILE: Path does not point to a file"),
    ],
)
def test_incomplete_or_contradictory_kafka_security_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], problem: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings, match="invalid settings") as raised:
        load_settings()
    assert problem in str(raised.value)


def test_a_password_is_never_repeated_in_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2-secret")
    with pytest.raises(InvalidSettings) as raised:
        load_settings()
    assert "KAFKA_SASL_PASSWORD is set but" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert "hunter2" not in repr(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
            kafka_sasl_password="hunter2-secret",
        )
    )


def test_plaintext_clients_get_only_the_address() -> None:
    assert kafka_connection(Settings(kafka_bootstrap_servers="k1:9092,k2:9092")) == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_clients_verify_the_broker_and_log_in() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="image-worker",
        kafka_sasl_password="pw",
    )
    options = kafka_connection(settings)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert options == {
        "bootstrap_servers": "localhost:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "image-worker",
        "sasl_plain_password": "pw",
    }


async def test_oauthbearer_reads_the_token_file_at_every_login(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n", encoding="utf-8")
    settings = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER", kafka_sasl_oauth_token_file=token
    )
    provider = kafka_connection(settings)["sasl_oauth_token_provider"]
    assert isinstance(provider, TokenFile)
    assert await provider.token() == "first"
    token.write_text("refreshed", encoding="utf-8")
    assert await provider.token() == "refreshed"
    token.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        await provider.token()


def test_settings_pass_to_a_child_process_with_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="image-api",
        kafka_sasl_password="pw",
        kafka_ssl_check_hostname=False,
    )
    for name, value in settings.as_environment().items():
        monkeypatch.setenv(name, value)
    assert load_settings() == settings


def test_the_launchers_acls_name_what_the_services_use() -> None:
    names, defaults = PipelineNames(), Settings()
    assert (names.images_topic, names.dlq_topic, names.callbacks_topic, names.consumer_group) == (
        defaults.images_topic,
        defaults.dlq_topic,
        defaults.callbacks_topic,
        defaults.consumer_group,
    )
    assert names.callbacks_group == callback_engine_settings(defaults).consumer_group
    assert names.callbacks_dlq_topic == callback_engine_settings(defaults).dlq_topic
    assert names.transactional_id_prefix == TRANSACTIONAL_ID_PREFIX


def test_the_launcher_refuses_to_secure_data_made_without_security(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = tmp_path / "node-1" / "kraft-logs" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("cluster.id=x\n", encoding="utf-8")
    assert kafka_cli(["start", "--secure", "--port", "0", "--data-dir", str(tmp_path)]) == 1
    assert f"the data in {tmp_path} was made without --secure" in capsys.readouterr().err
