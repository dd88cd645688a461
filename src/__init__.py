"""rnn-bench: recurrent networks compared on one command line."""
from src.gpus import register_resolvers

# Registered on import of the package, so every process that composes the configs has them: the command line,
# the tests, and the worker processes of a parallel launcher (which import src.* when they unpickle a job).
register_resolvers()
