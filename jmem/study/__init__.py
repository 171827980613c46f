"""The study: stages that turn a config into a run directory and act on it.

Training, leakage, scoring (and retraining and the report), and the run-directory format.
Only the command line imports this folder.
"""
