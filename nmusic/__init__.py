"""nmusic: genre-conditional generative models of music on Mel spectrograms (MelNet and cMelGAN).

The package follows the pipeline: ``data`` (audio in, the RAM cache, the clips) -> ``frontend``
(waveform <-> log-mel, Griffin-Lim) -> ``models`` (one folder per model family) -> ``training`` (the
trainer, checkpoints, run folders) -> ``generate`` (sampling and inversion to audio) -> ``evaluation``
(the genre judges, metrics, reports) -> ``interfaces`` (the ``nmusic`` command, the demo, the
notebooks' helpers and widgets). ``bench`` measures speed; ``utils`` holds what every stage shares.
"""
__version__ = "0.1.0"
