"""The redact step: face detection, tracking, irreversible masks, evidence-grade output."""
