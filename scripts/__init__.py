"""Tools around the pipeline: the replay command (replay/), the local Kafka launcher (kafka/), the benchmarks
(bench/) and the local demo (run_local.py)."""
