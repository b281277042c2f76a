"""LLM backends: an OpenAI-compatible HTTP client (vLLM) and a deterministic fake."""
