"""Model registry: every ML model the pipelines use, with its source, files, SHA-256 and licence.

The probe step needs no model; transcription and face masking register theirs
here, and the worker loads them from disk only (never from a model hub).
"""
