"""Shared helpers for gprocket's tests."""
