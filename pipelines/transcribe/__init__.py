"""transcribe: speech to text that says where it cannot be trusted, instead of inventing it.

audio (ffmpeg to 16 kHz mono, on disk) -> vad (Silero, speech regions) ->
chunks (regions grouped up to 30 s) -> language (per chunk, top-3) ->
whisper (Russian chunks, batched) or ctc (a configured model for another
language, e.g. Chechen) or nothing (needs human transcription) -> flags ->
formats (JSON, WebVTT, SRT, text). ``step`` ties them together.
"""
