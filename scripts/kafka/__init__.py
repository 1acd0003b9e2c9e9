"""``image-kafka``: Apache Kafka from its Maven jars, run with ``java`` in KRaft mode (tests and local runs)."""
