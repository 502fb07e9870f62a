"""unsloth_min: a small local LLM server."""
