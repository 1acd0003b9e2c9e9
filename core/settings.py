"""One typed settings object per process, read from the environment.

Every process builds it once at start-up and passes it down, so tests can hand in their own. Each field is
read from the environment variable of the same name in upper case (``KAFKA_BOOTSTRAP_SERVERS``,
``IMAGES_TOPIC``, ...); a bad value fails start-up with a message that names the variable.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import limits
from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

PositiveSeconds = Annotated[float, Field(gt=0)]
# A retention period: whole seconds, or "never" to keep forever.
TimeToLive = Annotated[int, Field(ge=1)] | Literal["never"]
DAY_S = 24 * 3600


@dataclass(frozen=True)
class BlobLocation:
    """Where blobs live: a folder, or a bucket and key prefix of an S3-compatible store."""

    scheme: Literal["file", "s3"]
    folder: Path = Path()
    bucket: str = ""
    prefix: str = ""


class Settings(BaseSettings):
    """Configuration shared by ``image-api``, ``image-worker`` and ``image-replay``."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="localhost:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    images_topic: str = Field(default="images", min_length=1, description="Main topic of image_process events.")
    dlq_topic: str = Field(default="images.dlq", min_length=1, description="Dead-letter topic.")
    callbacks_topic: str = Field(
        default="images.callbacks",
        min_length=1,
        description="Topic of job_callback records (completion callbacks waiting to be delivered).",
    )
    topic_partitions: int = Field(default=6, ge=1, description="Partitions of the main topic when created.")
    topic_replication_factor: int = Field(default=1, ge=1, description="Replication factor of created topics.")
    consumer_group: str = Field(default="image-workers", min_length=1, description="Workers' consumer group.")

    # How every Kafka client (API, workers, image-replay, benchmarks) reaches the brokers: see core/kafka_connection.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS and a login)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        default=None, description="How to log in with SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER."
    )
    kafka_sasl_username: str | None = Field(default=None, min_length=1, description="PLAIN or SCRAM user.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="PLAIN or SCRAM password.")
    kafka_sasl_oauth_token_file: FilePath | None = Field(
        default=None,
        description="OAUTHBEARER: file holding the current access token (re-read at every login, so a sidecar "
        "or a mounted secret can refresh it).",
    )
    kafka_ssl_cafile: FilePath | None = Field(
        default=None, description="CA certificates (PEM) that sign the brokers' certificates; default: the system's."
    )
    kafka_ssl_certfile: FilePath | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None, description="Private key (PEM) of KAFKA_SSL_CERTFILE, unless that file holds it."
    )
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Password of the private key.")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names the host connected to."
    )

    # One place whatever the working directory, so the API, the workers and image-replay started from different
    # folders still share one database and one store.
    database_url: str = Field(
        default="sqlite:///~/.local/share/image-pipeline/images.db",
        description="Job status database: sqlite:///PATH (default; ~ is the home folder) or "
        "postgresql://USER:PASS@HOST/DB.",
    )
    storage_dir: Path = Field(
        default=Path("~/.local/share/image-pipeline/blobs"), description="Where uploads and results are stored."
    )
    # Where blobs live when several machines share the work: see core/blobs.py.
    blob_store_url: str | None = Field(
        default=None,
        description="Where uploads and results live: file:///PATH or s3://BUCKET[/PREFIX]; unset: STORAGE_DIR.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint of a store other than AWS (e.g. http://seaweedfs:8333)."
    )
    aws_access_key_id: str | None = Field(default=None, min_length=1, description="S3 access key id.")
    aws_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret access key.")
    aws_region: str = Field(default="us-east-1", min_length=1, description="S3 region.")
    result_download: Literal["stream", "redirect"] = Field(
        default="stream",
        description="How GET /images/{id}/result serves a result: streamed through the API, or (S3 only) a 307 "
        "redirect to a signed URL of the object store.",
    )
    result_url_expiry_s: int = Field(
        default=60, ge=1, le=3600, description="How long a signed result URL stays valid (RESULT_DOWNLOAD=redirect)."
    )

    auth_disabled: bool = Field(
        default=False,
        description="Serve the API without API keys: for a local demo only (make run sets it and says so).",
    )
    rate_limit: str = Field(
        default="50/second",
        description="Requests one API key may make to /images, per API process (e.g. 50/second, 1000/minute).",
    )
    send_timeout_s: PositiveSeconds = Field(
        default=5.0, description="Longest the API waits for the broker's ack before answering 503."
    )
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After the API sends with a 503.")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="Largest accepted upload.")
    max_concurrent_uploads: int = Field(
        default=8, ge=1, description="Uploads the API takes at once; more get 503 with Retry-After."
    )
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest request head; more gets 431.")
    header_timeout_s: PositiveSeconds = Field(
        default=10.0, description="Longest a request's headers (or a new connection's first request) may take."
    )
    body_timeout_s: PositiveSeconds = Field(default=60.0, description="Longest a request's body may take to arrive.")

    # The worker (image-worker).
    worker_concurrency: int = Field(default=8, ge=1, description="Jobs running at once per worker process.")
    max_attempts: int = Field(default=4, ge=1, description="Tries of a transiently failing job before the DLQ.")
    retry_backoff_s: PositiveSeconds = Field(default=0.5, description="First retry delay; doubles per attempt.")
    retry_backoff_max_s: PositiveSeconds = Field(default=30.0, description="Longest retry delay.")
    commit_interval_s: PositiveSeconds = Field(default=1.0, description="Longest a finished offset waits to commit.")
    job_extra_delay_s: float = Field(default=0.0, ge=0, description="Added to every job (demos, tests).")
    decode_budget_mib: int = Field(
        default=512,
        ge=16,
        description="Memory the images a worker decodes and filters at once may take (estimated from their headers).",
    )
    max_image_pixels: int = Field(
        default=89_478_485, ge=1, description="Largest image (width x height) the API and the workers open."
    )
    fetch_timeout_s: PositiveSeconds = Field(default=20.0, description="Total deadline of one image download.")
    max_download_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="Largest image a worker fetches.")
    allow_private_urls: bool = Field(
        default=False, description="Let workers fetch loopback/private addresses (local demos and tests only)."
    )
    shutdown_timeout_s: PositiveSeconds = Field(
        default=30.0, description="Longest a stopping worker waits for in-flight jobs before leaving anyway."
    )
    liveness_timeout_s: PositiveSeconds = Field(
        default=60.0, description="A worker that has not polled or been in its group this long reports not alive."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Interface the worker's /metrics and /livez, and the API's /metrics, listen on (0.0.0.0 inside "
        "a container).",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve the worker's Prometheus metrics and liveness on this port."
    )
    api_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve the API's Prometheus metrics on this port, apart from the API's own (on METRICS_HOST); "
        "with --workers N, the sum of all N processes.",
    )

    # Retention (consumer/retention.py): counted from a final job's finished_at; the sweep runs in one worker.
    result_ttl: TimeToLive = Field(
        default=7 * DAY_S,
        description="Seconds a finished job's files (result, thumbnails, upload, original) are kept; never: forever.",
    )
    job_ttl: TimeToLive = Field(
        default=30 * DAY_S,
        description="Seconds a finished job's row is kept (at least RESULT_TTL); then GET answers 410; never: forever.",
    )
    tombstone_ttl: TimeToLive = Field(
        default=30 * DAY_S,
        description="Seconds an expired job is remembered after its row is deleted (410, not 404; replays skipped).",
    )
    retention_sweep_interval_s: PositiveSeconds = Field(
        default=300.0, description="How often the retention sweep runs (in the worker that holds its lease)."
    )
    retention_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Jobs one retention step handles per sweep: bounded work per pass."
    )

    # Completion callbacks (signed webhooks): see consumer/callbacks.py.
    callback_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Most POSTs of one callback before it is given up on."
    )
    callback_backoff_s: PositiveSeconds = Field(
        default=1.0, description="First wait after a failed callback POST; doubles per attempt, with jitter."
    )
    callback_backoff_max_s: PositiveSeconds = Field(default=300.0, description="Longest wait between callback POSTs.")
    callback_timeout_s: PositiveSeconds = Field(
        default=10.0, description="Total deadline of one callback POST (connect, send, answer)."
    )
    callback_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret of the callbacks of jobs submitted with AUTH_DISABLED (each API key has its "
        "own otherwise); unset: such jobs cannot ask for a callback.",
    )

    # image-api and image-worker (uvicorn's lines too): see core/logs.py.
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or as one JSON object per line (json) for a log store."
    )

    # Tracing (core/tracing.py): the standard OpenTelemetry variables. Either endpoint switches it on; the SDK reads
    # the rest of its OTEL_* variables (headers, timeout, sampler) itself.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP collector base URL; /v1/traces is appended. Unset: tracing is off."
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP URL for traces, used as given (overrides the base URL for traces)."
    )
    otel_service_name: str | None = Field(
        default=None, description="The service.name of the spans (default image-api, image-worker, image-replay)."
    )
    otel_sdk_disabled: bool = Field(default=False, description="true: no tracing even with an endpoint set.")

    @property
    def tracing_enabled(self) -> bool:
        """Whether spans are exported: an OTLP endpoint is set and the SDK is not disabled."""
        endpoint = self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint
        return bool(endpoint) and not self.otel_sdk_disabled

    def as_environment(self) -> dict[str, str]:
        """The environment variables that make another process (a worker, the API) read these settings."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_has_hosts(cls, value: str) -> str:
        hosts = [host.strip() for host in value.split(",") if host.strip()]
        if not hosts or any(":" not in host for host in hosts):
            raise ValueError("expected a comma-separated list of host:port, e.g. localhost:9092")
        return ",".join(hosts)

    def blob_store_location(self) -> BlobLocation:
        """Where ``BLOB_STORE_URL`` (or ``STORAGE_DIR``) puts blobs."""
        if self.blob_store_url is None:
            return BlobLocation("file", folder=self.storage_dir)
        url = urllib.parse.urlsplit(self.blob_store_url)
        if url.scheme == "s3":
            return BlobLocation("s3", bucket=url.netloc, prefix=url.path.strip("/"))
        return BlobLocation("file", folder=Path(urllib.parse.unquote(url.path)).expanduser().absolute())

    @field_validator("blob_store_url")
    @classmethod
    def _blob_store_url_is_supported(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urllib.parse.urlsplit(value)
        if url.scheme == "s3" and url.netloc and not url.query:
            return value
        if url.scheme == "file" and url.netloc in ("", "localhost") and url.path.startswith("/"):
            return value
        raise ValueError("expected file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX]")

    @model_validator(mode="after")
    def _result_redirects_need_an_object_store(self) -> Self:
        if self.result_download == "redirect" and self.blob_store_location().scheme != "s3":
            raise ValueError("RESULT_DOWNLOAD=redirect needs an object store: BLOB_STORE_URL=s3://BUCKET[/PREFIX]")
        return self

    @field_validator("result_ttl", "job_ttl", "tombstone_ttl", mode="before")
    @classmethod
    def _ttl_is_seconds_or_never(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "never":
            return "never"
        try:
            seconds = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            seconds = 0
        if isinstance(value, bool) or seconds < 1:
            raise ValueError("expected whole seconds (at least 1), e.g. 604800 for 7 days, or never")
        return seconds

    @model_validator(mode="after")
    def _rows_outlive_their_files(self) -> Self:
        result_ttl, job_ttl = _seconds(self.result_ttl), _seconds(self.job_ttl)
        if job_ttl < result_ttl:
            raise ValueError(
                f"JOB_TTL ({self.job_ttl}) must be at least RESULT_TTL ({self.result_ttl}): a job's row is kept at "
                "least as long as its files, so GET can say they expired"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        problems = kafka_security_problems(self)
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError("expected a rate such as 50/second or 1000/minute") from None
        return value

    @field_validator("storage_dir")
    @classmethod
    def _storage_dir_is_absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgres")):
            raise ValueError("expected sqlite:///PATH or postgresql://USER:PASS@HOST/DB")
        return value


def _seconds(ttl: int | Literal["never"]) -> float:
    return float("inf") if ttl == "never" else float(ttl)


def ttl_seconds(ttl: int | Literal["never"]) -> float | None:
    """A retention setting in seconds, or None for ``never`` (kept forever)."""
    return None if ttl == "never" else float(ttl)


def kafka_security_problems(settings: Settings) -> list[str]:
    """What is missing or contradictory in the ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*`` set.

    A setting that the protocol would ignore is an error too: a password given with PLAINTEXT most likely means the
    protocol was forgotten, and the service would talk in clear to a broker believed secured.
    """
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    uses_sasl, uses_tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    login = {"KAFKA_SASL_USERNAME": settings.kafka_sasl_username, "KAFKA_SASL_PASSWORD": settings.kafka_sasl_password}
    token = {"KAFKA_SASL_OAUTH_TOKEN_FILE": settings.kafka_sasl_oauth_token_file}
    tls = {
        "KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
        "KAFKA_SSL_KEY_PASSWORD": settings.kafka_ssl_key_password,
    }
    given = [name for name, value in {"KAFKA_SASL_MECHANISM": mechanism, **login, **token}.items() if value is not None]
    problems = []
    if not uses_sasl:
        problems += [f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not log in" for name in given]
    elif mechanism is None:
        problems.append(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM")
    elif mechanism == "OAUTHBEARER":
        problems += [
            f"{name} is needed with KAFKA_SASL_MECHANISM=OAUTHBEARER" for name, v in token.items() if v is None
        ]
        problems += [f"{name} is not used by OAUTHBEARER" for name, v in login.items() if v is not None]
    else:
        problems += [
            f"{name} is needed with KAFKA_SASL_MECHANISM={mechanism}" for name, v in login.items() if v is None
        ]
        problems += [f"{name} is not used by {mechanism}" for name, v in token.items() if v is not None]
    if not uses_tls:
        problems += [
            f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS"
            for name, value in tls.items()
            if value is not None
        ]
    elif settings.kafka_ssl_certfile is None:
        problems += [
            f"{name} is set without KAFKA_SSL_CERTFILE"
            for name in ("KAFKA_SSL_KEYFILE", "KAFKA_SSL_KEY_PASSWORD")
            if tls[name] is not None
        ]
    if uses_tls and not problems:
        problems += _unloadable_tls_files(settings)
    return problems


def _unloadable_tls_files(settings: Settings) -> list[str]:
    """Load the TLS files once at start-up, so a wrong file or key password is named now, not as "Kafka is down"."""
    context = ssl.create_default_context()
    try:
        if settings.kafka_ssl_cafile is not None:
            context.load_verify_locations(cafile=settings.kafka_ssl_cafile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return [f"KAFKA_SSL_CAFILE: cannot load {settings.kafka_ssl_cafile} as PEM certificates ({exc})"]
    key_password = settings.kafka_ssl_key_password
    try:
        if settings.kafka_ssl_certfile is not None:
            password = key_password.get_secret_value() if key_password else None
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile, password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return [f"KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE, KAFKA_SSL_KEY_PASSWORD: cannot load the key pair ({exc})"]
    return []


class InvalidSettings(Exception):
    """The environment holds a bad value; the message names each variable and what is wrong with it."""


def load_settings(**overrides: Any) -> Settings:
    """Read :class:`Settings` from the environment (``overrides`` win), naming bad variables on failure."""
    problems = [
        f"{name}: not a setting of this version (the Kafka client settings are KAFKA_SECURITY_PROTOCOL, "
        "KAFKA_SASL_* and KAFKA_SSL_*: see the README); unset it rather than run with it ignored"
        for name in unknown_kafka_client_settings(os.environ)
    ]
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors(include_url=False)]
    if problems:
        raise InvalidSettings("invalid settings:\n  " + "\n  ".join(problems))
    return settings


def _describe(error: ErrorDetails) -> str:
    """One problem as ``VARIABLE: what is wrong (got value)``; passwords are not repeated, whole-model checks name
    their variables themselves."""
    if not error["loc"]:
        return str(error.get("ctx", {}).get("error", error["msg"]))
    name = ".".join(str(part) for part in error["loc"]).upper()
    shown = "'***'" if "PASSWORD" in name else repr(error.get("input"))
    return f"{name}: {error['msg']} (got {shown})"


# Words in a KAFKA_* variable that make it look like a client setting, e.g. KAFKA_SECURITY_PROTOCOL=SASL_SSL: ignored
# silently, it would leave the service talking plaintext to a broker it believes secured. Kafka's own script
# variables (KAFKA_HOME, KAFKA_HEAP_OPTS, KAFKA_OPTS, ...) contain none of them.
_CLIENT_SETTING_WORDS = ("SECURITY", "SASL", "SSL", "TLS", "BOOTSTRAP", "CLIENT", "USERNAME", "PASSWORD", "JAAS")


def unknown_kafka_client_settings(environment: Mapping[str, str]) -> list[str]:
    """The ``KAFKA_*`` variables in ``environment`` that look like client settings but are none of ours."""
    known = {name.upper() for name in Settings.model_fields}
    return sorted(
        name
        for name in environment
        if name.upper().startswith("KAFKA_")
        and name.upper() not in known
        and any(word in name.upper() for word in _CLIENT_SETTING_WORDS)
    )
