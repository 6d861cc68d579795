class HarnessError(Exception):
    """A user mistake (unknown name, bad path, bad image, wrong shape): printed as one line, exit 2."""

    def __str__(self) -> str:
        text = super().__str__()
        # Raised while a tf.function traces, it comes back with an "in user code:" traceback before
        # the message: the message is its last line.
        if text.startswith("in user code:"):
            return text.strip().splitlines()[-1].strip().removeprefix(f"{type(self).__name__}: ")
        return text
