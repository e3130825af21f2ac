"""nbval runs the notebooks under the small test profile unless the caller chose another one.

Under the test profile every test session starts from an empty work folder, so runs left by an
earlier session (perhaps of other presets) are never resumed; within the session the notebooks
build on each other (04 compares the runs 02 and 03 trained).
"""
import os
import shutil
from pathlib import Path

os.environ.setdefault("NMUSIC_PROFILE", "test")
os.environ.setdefault("MPLBACKEND", "Agg")

if os.environ["NMUSIC_PROFILE"] == "test":
    shutil.rmtree(Path(__file__).parent / "nmusic_work.test", ignore_errors=True)
