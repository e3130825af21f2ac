"""nbval runs the notebooks under the small test profile unless the caller chose another one."""
import os

os.environ.setdefault("NMUSIC_PROFILE", "test")
os.environ.setdefault("MPLBACKEND", "Agg")
