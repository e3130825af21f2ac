"""Small helpers every stage shares: one of each::

    files.py     the one atomic writer (checkpoints, the cache, judges, loss.png, reports)
    parallel.py  the one process pool (the manifest's probes, prepare's decoding), with a fallback
    progress.py  progress bars: tqdm's in a terminal or a notebook, a line every few seconds in a log
"""
