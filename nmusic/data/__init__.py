"""Audio in, up to the clips the models learn from (paper sections 2 and 4.1), in pipeline order::

    fetch.py     Drive links, archives, folders -> a local folder of genre folders (safe extraction)
    decode.py    any audio file -> mono float32 at the rate asked for (libsndfile; FFmpeg for m4a/webm)
    manifest.py  one row per usable file (genre, duration, rate, channels); the skipped ones with a reason
    cache.py     every file decoded and resampled once into one cache file, reloaded memory-mapped
    clips.py     the train/validation split by file, random-chunk batches, fixed evaluation clips
    synth.py     the embedded procedural dataset (classical, EDM, lofi)
    embedded.py  that dataset through the same path as a user's music, or straight into memory

Another kind of data (MIDI for a note-based model) gets a module of its own here.
"""
