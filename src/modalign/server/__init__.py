"""HTTP API and web page for any-to-any search (FastAPI + uvicorn)."""

from modalign.server.app import create_app
from modalign.server.schemas import ServerSettings

__all__ = ["ServerSettings", "create_app"]
