"""rnn-bench: recurrent networks compared on one command line."""
