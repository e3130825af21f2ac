"""Is the generated audio music of the genre asked for? (paper sections 5 and 7)::

    judge.py          the network judge: hears rhythm and how the spectrum moves, from audio
    feature_judge.py  the interpretable judge: named musical features and a linear model
    fakes.py          trivial fakes the judges must score at chance
    data.py           the real audio a run is compared with, its judges, and the judged real clips
    metrics.py        Fréchet and kernel distances, originality (nearest training clips)
    evaluate.py       nmusic evaluate: all of it for a set of runs, into metrics.json
    report.py         the markdown reports (metrics.md, the demo's report.md)
    listening_test.py the blind listening test and mean opinion scores
"""
