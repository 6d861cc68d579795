class HarnessError(Exception):
    """A user mistake (unknown name, bad path, bad image, wrong shape): printed as one line, exit 2."""
