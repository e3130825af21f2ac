"""Audio in: decoding, fetching, the manifest, the RAM cache and its clips, the embedded dataset."""
