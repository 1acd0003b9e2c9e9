"""Infrastructure that the API and the workers share: settings, the job store, the blob store, topics."""
