"""The HTTP API: FastAPI app factory, routes per feature, problem+json errors."""
