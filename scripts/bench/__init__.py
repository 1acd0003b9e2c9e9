"""Benchmarks that report every figure as a ratio against a limit measured in the same run.

``python -m scripts.bench`` (see :mod:`scripts.bench.cli`). Absolute figures from a shared 2-core machine say
little; a ratio against the HTTP floor, the broker's own limit or a raw consume loop, measured minutes apart on
the same machine, says where the pipeline's own cost lies.
"""
