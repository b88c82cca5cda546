"""WBC pipeline: the importable library behind the DVC stages in `stages/`."""
