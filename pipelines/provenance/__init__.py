"""Provenance: C2PA manifests signed into every video derivative, and their offline verification."""
