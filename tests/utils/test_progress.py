"""Progress bars in a log (nmusic/utils/progress.py): a plain line every few seconds, not one per step."""
import io
import time

from nmusic.utils import progress
from nmusic.utils.progress import progress_bar


def test_in_a_log_a_bar_is_a_few_plain_lines():
    log = io.StringIO()                       # not a terminal, as a log file or CI output is not
    with progress_bar(total=5000, desc="train", unit="step", file=log) as bar:
        for _ in range(5000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3 and "5000/5000" in lines[-1], lines   # not one line (or redraw) per step


def test_in_a_log_a_slow_bar_writes_a_line_every_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    log = io.StringIO()
    with progress_bar(total=6, desc="judge", file=log) as bar:
        for _ in range(6):
            time.sleep(0.06)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert 4 <= len(lines) <= 8 and all(line.startswith("judge:") for line in lines), lines
