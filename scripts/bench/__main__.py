"""``python -m scripts.bench``: see :mod:`scripts.bench.cli`."""

from scripts.bench.cli import main

main()
