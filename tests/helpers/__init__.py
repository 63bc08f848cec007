"""Helpers shared by test modules (no test module imports another): import them as ``tests.helpers.<name>``."""
