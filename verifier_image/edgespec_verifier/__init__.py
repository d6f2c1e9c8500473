"""edgespec verifier: the cloud side of edge-cloud speculative decoding (verify endpoint, engines)."""
