"""The exception types the CLI turns into a one-line message and exit status 2."""


class UserError(ValueError):
    """Bad input from the user: a file, an argument or a config value, named in the message.

    A ValueError, so Python callers catch it as they catch any bad argument.
    """


class ArgumentError(UserError):
    """A bad value of one named API argument; the CLI swaps the name for its flag.

    The message names the argument first, or where it holds `{argument}`; other
    arguments it points to are `mentions`, written `{name}` in the message, and
    read as their flags on the command line too.
    """

    def __init__(self, argument, message, mentions=()):
        self.argument, self.message, self.mentions = argument, message, tuple(mentions)
        super().__init__(self._text({}))

    def for_flags(self, flags):
        """The same error naming the command-line flag `flags[argument]` instead."""
        return UserError(self._text(flags))

    def _text(self, flags):
        message = self.message
        for name in self.mentions:
            message = message.replace("{" + name + "}", flags.get(name, name))
        return _naming(flags.get(self.argument, self.argument), message)


def _naming(name, message):
    return message.replace("{argument}", name) if "{argument}" in message else f"{name}: {message}"


class ClusterLost(Exception):
    """A task whose state cannot be rebuilt (a parameter server) is gone; the job must restart
    from its last checkpoint. The CLI prints the message and exits with `EXIT_STATUS`, which
    is in the 128-255 range that Kubernetes job controllers treat as retryable."""

    EXIT_STATUS = 175
