"""The composition root: HTTP app, ingest pipeline, CLI."""

from gateway.app import create_app
from gateway.pipeline import IngestPipeline

__all__ = ["IngestPipeline", "create_app"]
