"""Developer and test helper scripts (local services, tooling)."""
