"""One exception type for every problem a user can fix: bad input, bad params, failed fetch."""


class PipelineError(Exception):
    """An error whose message names the file (or param) and the problem; stages print it and exit 1."""
