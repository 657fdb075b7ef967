"""Helpers the tests share that are not fixtures: real servers to test against."""
