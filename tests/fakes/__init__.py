"""Fakes of external services, run in-process for integration tests."""
