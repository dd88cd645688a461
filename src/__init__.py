"""rnn-bench: recurrent networks compared on one command line."""

import sys

from omegaconf import OmegaConf

from src.data.sources import default_cache_dir
from src.records.identity import register_resolvers as register_identity_resolvers
from src.records.rundir import job_dir_name
from src.runs.gpus import register_resolvers

# Registered on import of the package, so every process that composes the configs has them: the command line,
# the tests, and the worker processes of a parallel launcher (which import src.* when they unpickle a job).
register_resolvers()
register_identity_resolvers()  # ${run_name:}, ${run_tags:}, ${run_job_type:} (conf/logger/wandb.yaml)
if not OmegaConf.has_resolver("job_dir"):
    OmegaConf.register_new_resolver("job_dir", job_dir_name)
if not OmegaConf.has_resolver("python_prefix"):  # the venv (or Python install) running this command
    OmegaConf.register_new_resolver("python_prefix", lambda: sys.prefix)
if not OmegaConf.has_resolver("rnn_bench_cache"):  # paths.cache_dir: the same folder from any working directory
    OmegaConf.register_new_resolver("rnn_bench_cache", lambda: str(default_cache_dir()))
