"""The learning side: the event log's format, the trainer, off-policy evaluation, offline jobs."""
