"""How an optimizer update runs: one strategy object per run, the `update` config group (conf/update/<name>.yaml,
whose `_target_` names a class or factory here), instantiated by src/train.py's build().

    automatic.py   Lightning's loop: backward, optimizer step, schedulers; clipping through its
                   configure_gradient_clipping hook (update=automatic)
    manual.py      one update per batch run by the strategy, with clipping and schedulers (update=manual)
    truncated.py   BPTT(k1, k2): several manual updates per batch (update=truncated; needs truncation=tbptt)
    grouped.py     K batches per Lightning step around an `inner` strategy (update=grouped, update.per_step=K)
    graphed.py     the manual update replayed from a CUDA graph where exact (update=graphed: grouped around it)
    auto.py        update=auto (the default): picks one of the above from truncation, device, diagnostics and
                   gradient accumulation, and says why; `per_batch`, grouped's default inner: truncated or manual
                   as the truncation group asks
    base.py        what a strategy provides to the task (clipping settings included), and Wrapper for
                   strategies around another one
    schedules.py   the optimizer and LR schedule settings checked before a run, followed by a resumed run
    lightning_internals.py   every use of Lightning's private internals, tested by tests/test_lightning_internals.py

The task (src/tasks/base.py) holds its strategy as `task.update` and delegates its training step and the hooks
around updates to it; it knows nothing else about them. Every strategy takes update.gradient_clip_val and
update.gradient_clip_algorithm (the Trainer's are refused by src/runs/build.py).

To add a strategy (e.g. several models trained stacked in one process): write src/updates/<name>.py with a
subclass of `Update` (or `Wrapper`, to run around another strategy) implementing `train_on(batch)` and whichever
hooks it needs (`training_step(batch, batch_idx)` where a step takes something other than one batch: grouped.py
takes the list of batches its loader hands, `per_step` > 1) -- and conf/update/<name>.yaml with its `_target_` and settings (the clipping
pair included). `python -m src.train update=<name>` runs it; no edit of the task, of auto.py or of src/train.py
(tests/test_updates.py adds one from a temporary folder through hydra.searchpath). What src/runs/build.py checks of
any strategy it reads through `setting(name)`: `truncation` (None: full BPTT, refused with truncation=tbptt),
`per_step` (> 1: the loader hands groups of that many batches; refused with diagnostics) and `automatic` (False: refused with gradient accumulation).
"""
