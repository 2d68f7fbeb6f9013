"""Media steps: pure file-in/file-out functions grouped into versioned pipelines."""
