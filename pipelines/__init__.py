"""Media steps: pure file-in/file-out functions grouped into versioned pipelines."""

import os

# onnxruntime (Silero VAD, CTC models) otherwise writes a device id and an event queue under the home the
# first time it is imported: an identifier of this machine left on a disk that may be seized. It reads this
# switch once, at import, so it is set here, before any step can import it, and child processes inherit it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

# OpenCV reads its decoder's pixel limit once, when it is first imported; set here, before any step imports it.
# Enrolment also checks a photo's declared size itself, whoever imported OpenCV first (pipelines.redact.staff).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")

# OpenCV's C++ writes its warnings straight to stderr, between the lines of a JSON log; read at its import too.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
