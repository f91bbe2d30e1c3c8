"""The base of every error audiogan reports to a user as one line, without a traceback."""


class AudioganError(RuntimeError):
    """Bad input, a bad configuration or an unreachable store: the message says what to do."""
