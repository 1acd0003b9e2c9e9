"""A secured listener for the local broker: TLS with a CA made at start, SASL logins, and Kafka's ACL authorizer.

``image-kafka start --secure`` (and the security tests) get a broker that behaves like a managed Kafka: clients
connect over ``SASL_SSL`` only, log in with SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN, and may do only what an ACL
grants (``allow.everyone.if.no.acl.found`` stays false). The CA and the broker's certificate are made with the
JDK's ``keytool``; passwords are random and kept, with the certificates, in one private folder so a restarted
broker comes back with the same ones. Stdlib only, like the rest of the launcher.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.kafka.support import KafkaLocalError, find_java

ADMIN_USER = "admin"
CLIENT_MECHANISM = "SCRAM-SHA-512"
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SCRAM_ITERATIONS = 8192
CERTIFICATE_DAYS = 365
_STATE_FILE = "logins.json"
_KEYTOOL_TIMEOUT_S = 60.0
_VALIDITY = ("-validity", str(CERTIFICATE_DAYS))
_QUICK_JVM = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]  # keytool runs for a moment: start it fast
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


@functools.cache
def _keytool() -> str:
    """The ``keytool`` next to the ``java`` the launcher runs, so both come from one JDK."""
    candidate = Path(find_java()).resolve().parent / "keytool"
    found = str(candidate) if candidate.is_file() else shutil.which("keytool")
    if not found:
        raise KafkaLocalError("keytool not found: install a full JDK (the JRE alone has none)")
    return found


@dataclass(frozen=True)
class SecureListener:
    """Certificates and logins of a secured broker, kept in ``directory`` (made private: it holds passwords)."""

    directory: Path
    passwords: Mapping[str, str]  # user -> password; ADMIN_USER is the broker's own login and a super user
    store_password: str
    host: str

    @classmethod
    def load(cls, directory: Path) -> SecureListener | None:
        """The material a secured broker was started with in ``directory``, or None if it was not secured."""
        state_file = directory.resolve() / _STATE_FILE
        if not state_file.is_file():
            return None
        state = json.loads(state_file.read_text(encoding="utf-8"))
        return cls(directory.resolve(), state["passwords"], state["store_password"], state["host"])

    @classmethod
    def prepare(cls, directory: Path, users: Iterable[str], *, host: str) -> SecureListener:
        """Load the material in ``directory``, or make a CA, a broker certificate and passwords for ``users``."""
        directory = directory.resolve()
        if (listener := cls.load(directory)) is not None:
            missing = set(users) - set(listener.passwords)
            if missing:
                raise KafkaLocalError(f"{directory} was made without the users {sorted(missing)}: use a new data dir")
            return listener
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        passwords = {user: secrets.token_urlsafe(18) for user in {ADMIN_USER, *users}}
        listener = cls(directory, passwords, secrets.token_urlsafe(18), host)
        listener._make_certificates()
        state = {"passwords": passwords, "store_password": listener.store_password, "host": host}
        _write_private(directory / _STATE_FILE, json.dumps(state))
        return listener

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) clients trust: ``KAFKA_SSL_CAFILE``."""
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def truststore(self) -> Path:
        return self.directory / "truststore.p12"

    @property
    def ca_store(self) -> Path:
        """The CA's key and certificate (PKCS12): what signs the broker's certificate and clients' ones."""
        return self.directory / "ca.p12"

    def keytool(self, store: Path, *arguments: str | Path) -> None:
        """Run ``keytool`` on the PKCS12 ``store`` (locked with the listener's store password)."""
        command = [_keytool(), *_QUICK_JVM, *map(str, arguments), "-keystore", str(store), "-storetype", "PKCS12"]
        done = subprocess.run(
            [*command, "-storepass", self.store_password],
            capture_output=True,
            text=True,
            timeout=_KEYTOOL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise KafkaLocalError(f"keytool {arguments[0]} failed", (done.stdout + done.stderr).strip())

    def new_key(self, store: Path, alias: str, subject: str, *extensions: str) -> None:
        """A fresh EC key pair named ``alias`` in ``store``, self-signed until :meth:`sign`."""
        curve = ("-keyalg", "EC", "-groupname", "secp256r1")
        self.keytool(store, "-genkeypair", "-alias", alias, "-dname", subject, *curve, *extensions, *_VALIDITY)

    def sign(self, store: Path, alias: str, *extensions: str) -> None:
        """Have the CA certify the key ``alias`` in ``store``, with the CA's certificate next to it as its chain."""
        request, signed = store.with_suffix(".csr"), store.with_suffix(".crt")
        self.keytool(store, "-certreq", "-alias", alias, "-file", request)
        self.keytool(
            self.ca_store,
            "-gencert",
            "-rfc",
            "-alias",
            "ca",
            "-infile",
            request,
            "-outfile",
            signed,
            *extensions,
            *_VALIDITY,
        )
        self.keytool(store, "-importcert", "-noprompt", "-alias", "ca", "-file", self.ca_file)
        self.keytool(store, "-importcert", "-alias", alias, "-file", signed)
        request.unlink()
        signed.unlink()

    def _make_certificates(self) -> None:
        self.new_key(self.ca_store, "ca", "CN=image-pipeline local CA", "-ext", "bc:c")
        self.keytool(self.ca_store, "-exportcert", "-rfc", "-alias", "ca", "-file", self.ca_file)
        self.new_key(self.keystore, "broker", f"CN={self.host}")
        san = ",".join(_alternative_name(name) for name in sorted({"localhost", self.host}))
        self.sign(self.keystore, "broker", "-ext", f"SAN={san}", "-ext", "EKU=serverAuth,clientAuth")
        self.keytool(self.truststore, "-importcert", "-noprompt", "-alias", "ca", "-file", self.ca_file)

    def broker_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """The listeners, TLS, SASL and authorizer settings of ``server.properties``."""
        admin_password = self.passwords[ADMIN_USER]
        plain_users = " ".join(f'user_{user}="{password}"' for user, password in sorted(self.passwords.items()))
        own_login = f'username="{ADMIN_USER}" password="{admin_password}"'
        return {
            "listeners": f"SASL_SSL://{self.host}:{port},CONTROLLER://{self.host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{self.host}:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": ",".join([*SCRAM_MECHANISMS, "PLAIN"]),
            # The broker's own logins (to itself and to the controller) use PLAIN: SCRAM credentials live in the
            # metadata log, which a starting broker has not read yet.
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{_PLAIN_LOGIN} required {own_login} user_{ADMIN_USER}="{admin_password}";'
            ),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": f"{_PLAIN_LOGIN} required {own_login} {plain_users};",
            **{
                f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": f"{_SCRAM_LOGIN} required;"
                for mechanism in SCRAM_MECHANISMS
            },
            # Clients may also show a certificate from the CA (mutual TLS); one from elsewhere is refused.
            "listener.name.sasl_ssl.ssl.client.auth": "requested",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.store_password,
            "ssl.key.password": self.store_password,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(self.truststore),
            "ssl.truststore.password": self.store_password,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_USER}",
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that put every user's SCRAM credentials in the first metadata."""
        arguments = []
        for user, password in sorted(self.passwords.items()):
            for mechanism in SCRAM_MECHANISMS:
                arguments += [
                    "--add-scram",
                    f"{mechanism}=[name={user},password={password},iterations={SCRAM_ITERATIONS}]",
                ]
        return arguments

    def tool_config(self, user: str = ADMIN_USER) -> Path:
        """A client ``.properties`` file for Kafka's own tools (``--command-config``), logging in as ``user``."""
        path = self.directory / f"{user}.properties"
        lines = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": CLIENT_MECHANISM,
            "sasl.jaas.config": (f'{_SCRAM_LOGIN} required username="{user}" password="{self.passwords[user]}";'),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }
        _write_private(path, "".join(f"{key}={value}\n" for key, value in lines.items()))
        return path

    def client_environment(self, user: str, bootstrap_servers: str) -> dict[str, str]:
        """The ``KAFKA_*`` variables that make a service (``image-api``, ``image-worker``, ...) log in as ``user``."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": CLIENT_MECHANISM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.passwords[user],
            "KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    def write_environment_files(self, bootstrap_servers: str) -> dict[str, Path]:
        """One ``<user>.env`` per user (not the admin), for ``set -a; . FILE`` or compose's ``env_file``."""
        files = {}
        for user in sorted(set(self.passwords) - {ADMIN_USER}):
            path = self.directory / f"{user}.env"
            variables = self.client_environment(user, bootstrap_servers)
            _write_private(path, "".join(f"{name}={value}\n" for name, value in variables.items()))
            files[user] = path
        return files

    def probe_login(self) -> dict[str, Any]:
        """The ``broker_ids`` arguments that reach this listener: TLS trusting the CA, the admin's PLAIN login."""
        return {"tls": self.tls_context(), "login": (ADMIN_USER, self.passwords[ADMIN_USER])}

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the local CA (the launcher's readiness probe uses it)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _alternative_name(host: str) -> str:
    """A certificate's subjectAltName entry for ``host``: clients check the name (or address) they dialled."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"dns:{host}"
    return f"ip:{host}"


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
