"""Helpers the tests share that are not fixtures: real servers to test against, and a thread-safe sleep patch."""
