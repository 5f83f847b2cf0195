"""Tests that need no RabbitMQ: they run, and must pass, with nothing listening (tests/conftest.py skips its broker check for them)."""
