"""The worker: a consumer-group member that processes image jobs and commits only what is finished."""
