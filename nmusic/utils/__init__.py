"""Small helpers shared by every stage: atomic files, a process pool, progress bars."""
