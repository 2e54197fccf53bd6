"""The HTTP service: FastAPI app, policy registry, micro-batcher, event-log writer."""
