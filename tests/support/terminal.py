"""Child processes started as a user starts them at a terminal."""

import signal


def at_a_terminal() -> None:
    """``preexec_fn`` for a command a test interrupts with SIGINT (Ctrl-C): at a terminal Ctrl-C starts at its default;
    a command started from a background job (as a test run may be) inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt, so the test would measure the job control of whoever ran pytest."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
