"""``image-replay``: reset the workers' offsets and redrive dead letters (the production replay tool)."""
