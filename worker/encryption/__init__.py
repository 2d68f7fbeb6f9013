"""Encryption at rest: envelope encryption of stored objects, and the master keys that wrap their data keys."""
