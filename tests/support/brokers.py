"""Where the test suite's Kafka comes from: one place, never a skip.

The session's services (``tests/support/services.py``, ``--services``) decide: the broker ``KAFKA_BOOTSTRAP_SERVERS``
names (external), an ``apache/kafka`` container (docker), or a real broker from the local launcher
(``scripts/kafka/local.py``: Apache Kafka's own jars, run with ``java``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings
from scripts.kafka.acls import PipelineNames
from scripts.kafka.local import KafkaNode, stop_data_dir
from scripts.kafka.security import SecureListener
from tests.support.containers import kafka_container
from tests.support.services import Choice, Services


@contextlib.contextmanager
def session_broker(choice: Choice, data_dir: Path) -> Iterator[str]:
    """Yield the bootstrap address of a broker that lives for the ``with`` block (or longer, if external)."""
    if choice.services is Services.EXTERNAL:
        assert choice.bootstrap_servers, choice
        yield choice.bootstrap_servers
    elif choice.services is Services.DOCKER:
        with kafka_container() as bootstrap_servers:
            yield bootstrap_servers
    else:
        with KafkaNode(data_dir) as node:
            yield node.bootstrap_servers


# Kafka's unsecured OAUTHBEARER validator: it takes any unsigned token, so only a test broker turns it on, to prove
# that the clients' token login works.
UNSECURED_OAUTHBEARER = {
    "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN,OAUTHBEARER",
    "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config": (
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
    ),
}


@dataclass(frozen=True)
class SecuredBroker:
    """The launcher's ``--secure`` broker: SASL_SSL only, with the pipeline's ACLs for its users."""

    data_dir: Path
    bootstrap_servers: str
    listener: SecureListener
    names: PipelineNames

    def login(self, user: str, settings: Settings) -> Settings:
        """``settings`` made to reach this broker as ``user`` (SCRAM-SHA-512 over TLS, the launcher's CA)."""
        variables = self.listener.client_environment(user, self.bootstrap_servers)
        return Settings.model_validate({**settings.model_dump(), **{k.lower(): v for k, v in variables.items()}})


@contextlib.contextmanager
def secured_broker(data_dir: Path) -> Iterator[SecuredBroker]:
    """``image-kafka start --secure --detach`` for the ``with`` block: the launcher always, as only it makes the
    users and ACLs the tests log in with."""
    overrides = [arg for setting in UNSECURED_OAUTHBEARER.items() for arg in ("--set", "=".join(setting))]
    command = [str(Path(sys.executable).parent / "image-kafka"), "start", "--secure", "--detach", "--port", "0"]
    started = subprocess.run(
        [*command, "--data-dir", str(data_dir), *overrides], capture_output=True, text=True, timeout=180, check=False
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        listener = SecureListener.load(data_dir / "security")
        assert listener is not None
        names = PipelineNames()
        environment = (listener.directory / f"{names.worker_user}.env").read_text(encoding="utf-8")
        bootstrap = dict(line.split("=", 1) for line in environment.splitlines())["KAFKA_BOOTSTRAP_SERVERS"]
        yield SecuredBroker(data_dir, bootstrap, listener, names)
    finally:
        stop_data_dir(data_dir)


def client_certificate(listener: SecureListener, directory: Path, name: str, *, from_the_ca: bool) -> Path:
    """A PEM file with a client key and its certificate (from the listener's CA, or self-signed), for mutual TLS.

    keytool makes and signs the key; ``openssl pkcs12`` writes it as PEM, the one form Python's ssl module loads.
    """
    store = directory / f"{name}.p12"
    listener.new_key(store, name, f"CN={name}")
    if from_the_ca:
        listener.sign(store, name, "-ext", "EKU=clientAuth")
    pem = directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "pkcs12", "-in", store, "-passin", f"pass:{listener.store_password}", "-nodes", "-out", pem],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return pem
