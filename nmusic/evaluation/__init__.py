"""Evaluation: the genre judges, the fakes they are held to, metrics, the listening test, reports."""
