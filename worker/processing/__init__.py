"""Processing: the worker loop, the runner, reuse of finished steps, replication, signing, staff."""
