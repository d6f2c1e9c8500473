"""edgespec edge: the draft server (OpenAI-compatible API, draft-verify loop), profiler and model fetcher."""
