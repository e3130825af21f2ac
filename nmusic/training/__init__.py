"""Training (paper section 4): the loop and what it stands on::

    trainer.py      the one training loop (TrainConfig, Trainer, Callback)
    runs.py         run folders: train one (nmusic train), open a trained one (load_run), find them
    checkpoint.py   checkpoint files: save, load, the newest that loads, whether one can be resumed
    run_lock.py     one training session per run folder
    loss_log.py     the losses read back from the device once per log interval; divergence
    rng.py          every RNG state, saved and restored for an exact resume
    distributed.py  the DDP collectives (one process per GPU under torchrun)
"""
