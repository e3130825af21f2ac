"""The ways in::

    cli.py       the nmusic command (also python -m nmusic): one subcommand per step
    demo.py      nmusic demo: the whole job on the embedded dataset within 15 minutes on a CPU
    notebook.py  what the notebooks need besides display: profiles, Colab set-up, the data, live plots
    widgets.py   the two panels of notebook 04: generate and compare, the blind listening test
"""
