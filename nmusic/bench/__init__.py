"""Speed benchmarks in the paper's units (``nmusic bench``)."""
