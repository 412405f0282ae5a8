"""Lapse platform: configuration, clock, database, brokers, dead letters, CLI."""
