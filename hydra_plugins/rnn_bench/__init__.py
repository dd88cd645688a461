"""The suite's Hydra plugins (optuna_study: the resumable Optuna sweeper of sweep=optuna)."""
