"""The upload API: validates image jobs, appends them to the event log, answers 202."""
