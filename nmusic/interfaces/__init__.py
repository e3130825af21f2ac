"""The ways in: the ``nmusic`` command, the demo, the notebooks' helpers and widgets."""
