"""The suite's Hydra plugins (optuna_study: the resumable Optuna sweeper of sweep=optuna; packed_launcher: the
default multirun launcher, which trains jobs that may stack as one stacked job)."""
