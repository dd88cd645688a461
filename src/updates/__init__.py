"""How an optimizer update runs: one strategy object per run, chosen by src/updates/choose.py from the config.

    automatic.py   Lightning's loop: backward, optimizer step, clipping, schedulers (updates_per_step=1)
    manual.py      one update per batch run by the strategy, with clipping and schedulers
    truncated.py   BPTT(k1, k2): several manual updates per batch (truncation=tbptt)
    grouped.py     K batches per Lightning step around an inner strategy (updates_per_step=K > 1)
    graphed.py     the manual update replayed from a CUDA graph where exact (graph_updates=true, inside grouped)
    base.py        what a strategy provides to the task, and Wrapper for strategies around another one
    schedules.py   the optimizer and LR schedule settings checked before a run, followed by a resumed run
    lightning_internals.py   every use of Lightning's private internals, tested by tests/test_lightning_internals.py

The task (src/tasks/base.py) holds its strategy as `task.update` and delegates its training step and the hooks
around updates to it; it knows nothing else about them. To add a strategy (e.g. several models trained stacked
in one process): write src/updates/<name>.py with a subclass of `Update` (or `Wrapper`, to run around another
strategy) implementing `train_on(batch)` and whichever hooks it needs -- `attach(task)` may replace
`task.training_step` as grouped.py does, when the step must take something other than one batch -- and add the
config value that selects it to `choose()`. No edit of the task.
"""
