"""The pipeline's least-privilege ACLs, and granting them on a secured local broker.

Each service logs in as its own user and may do only its job: the API writes events (in transactions), the workers
read events, commit their group and write dead letters, and ``image-replay`` moves the workers' group and
redrives dead letters. The names are the services' defaults (``core.settings``); a test keeps them equal. List
what a broker holds with Kafka's own tool: ``image-kafka tool acls --list --bootstrap-server ... --command-config
<data dir>/security/admin.properties``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from scripts.kafka.security import ADMIN_USER, SecureListener
from scripts.kafka.support import KafkaLocalError, create_acls


class Resource(enum.IntEnum):
    """Kafka's ``ResourceType`` codes."""

    TOPIC = 2
    GROUP = 3
    TRANSACTIONAL_ID = 5


class Operation(enum.IntEnum):
    """Kafka's ``AclOperation`` codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


@dataclass(frozen=True)
class Acl:
    """One ALLOW rule: ``user`` may do ``operation`` on a resource named ``name`` (or every name it prefixes)."""

    user: str
    operation: Operation
    resource: Resource
    name: str
    prefixed: bool = False


@dataclass(frozen=True)
class PipelineNames:
    """Topics, groups and users the ACLs name."""

    images_topic: str = "images"
    dlq_topic: str = "images.dlq"
    callbacks_topic: str = "images.callbacks"
    consumer_group: str = "image-workers"
    transactional_id_prefix: str = "image-api-"  # the API's producers are image-api-<host>-<pid>-<n>
    api_user: str = "image-api"
    worker_user: str = "image-worker"
    replay_user: str = "image-replay"

    @property
    def users(self) -> tuple[str, str, str]:
        return self.api_user, self.worker_user, self.replay_user

    @property
    def redrive_group(self) -> str:
        return f"{self.consumer_group}.redrive"

    @property
    def callbacks_group(self) -> str:
        """The workers' callback consumer's group (consumer.callbacks)."""
        return f"{self.consumer_group}.callbacks"

    @property
    def callbacks_dlq_topic(self) -> str:
        return f"{self.callbacks_topic}.dlq"


def pipeline_acls(names: PipelineNames) -> list[Acl]:
    """What each service may do; anything else is refused (``allow.everyone.if.no.acl.found=false``)."""
    read, write, create, describe = Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DESCRIBE
    topic, group, transactional_id = Resource.TOPIC, Resource.GROUP, Resource.TRANSACTIONAL_ID
    api, worker, replay = names.users
    return [
        Acl(api, write, topic, names.images_topic),
        Acl(api, describe, topic, names.images_topic),
        Acl(api, write, transactional_id, names.transactional_id_prefix, prefixed=True),
        Acl(api, describe, transactional_id, names.transactional_id_prefix, prefixed=True),
        # Workers create their topics when missing, with the partition count their settings ask for.
        *(
            Acl(worker, create, topic, name)
            for name in (names.images_topic, names.dlq_topic, names.callbacks_topic, names.callbacks_dlq_topic)
        ),
        Acl(worker, read, topic, names.images_topic),
        Acl(worker, describe, topic, names.images_topic),
        Acl(worker, read, group, names.consumer_group),
        Acl(worker, describe, group, names.consumer_group),
        Acl(worker, write, topic, names.dlq_topic),
        Acl(worker, describe, topic, names.dlq_topic),
        # Completion callbacks: appended and delivered by the workers, on a topic and in a group of their own.
        *(Acl(worker, operation, topic, names.callbacks_topic) for operation in (read, write, describe)),
        Acl(worker, read, group, names.callbacks_group),
        Acl(worker, describe, group, names.callbacks_group),
        Acl(worker, write, topic, names.callbacks_dlq_topic),
        Acl(worker, describe, topic, names.callbacks_dlq_topic),
        # image-replay: reset the workers' group; redrive reads dead letters and writes them back to the main topic.
        *(
            Acl(replay, operation, resource, name)
            for operation in (read, describe)
            for resource, name in (
                (topic, names.images_topic),
                (topic, names.dlq_topic),
                (group, names.consumer_group),
                (group, names.redrive_group),
            )
        ),
        Acl(replay, write, topic, names.images_topic),
    ]


def grant(host: str, port: int, listener: SecureListener, acls: list[Acl]) -> None:
    """Add ``acls`` as the broker's admin in one CreateAcls request; raises ``KafkaLocalError`` if one is refused."""
    rules = [(acl.resource, acl.name, acl.prefixed, f"User:{acl.user}", int(acl.operation)) for acl in acls]
    errors = create_acls(
        host, port, rules, tls=listener.tls_context(), login=(ADMIN_USER, listener.passwords[ADMIN_USER])
    )
    refused = [f"{acl}: {error}" for acl, error in zip(acls, errors, strict=True) if error]
    if refused:
        raise KafkaLocalError(f"the broker refused {len(refused)} ACL(s)", "\n".join(refused))
