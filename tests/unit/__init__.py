"""Tests that need no RabbitMQ: they run, and must pass, with nothing listening.

tests/conftest.py checks for a broker only when a test outside this directory is selected.
"""
