"""Running a job: from a composed config to the objects that run (build.py), one run or stacked members
(seeds.py), the suite's callbacks and loggers, the console, the commands' shared error handling, GPU slots and
what sweeps need beyond Hydra's multirun (sweeps.py)."""
