"""Media steps: pure file-in/file-out functions grouped into versioned pipelines."""

import os

# onnxruntime (Silero VAD, CTC models) otherwise writes a device id and an event queue under the home the
# first time it is imported: an identifier of this machine left on a disk that may be seized. It reads this
# switch once, at import, so it is set here, before any step can import it, and child processes inherit it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
