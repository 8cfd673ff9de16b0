"""Errors the command line turns into one clear line and exit code 2."""


class InputError(ValueError):
    """Bad user input: a missing or malformed file, inconsistent shapes, a nonsensical parameter.

    The message must be one line that says what is wrong and what to fix; the CLI prints it as
    ``cryorestore: error: <message>`` and exits with status 2.
    """
