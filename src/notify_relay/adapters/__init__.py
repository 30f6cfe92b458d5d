"""Implementations of the ports: memory (tests), SQLite (embedded), HTTP delivery."""
