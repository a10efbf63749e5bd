"""How a channel's send failed: ``Temporary`` is retried with backoff, ``Permanent`` is not
(the person's next channel is tried). ``str(err)`` is what the alert's timeline shows: never a
secret."""


class ChannelError(Exception):
    pass


class Temporary(ChannelError):
    pass


class Permanent(ChannelError):
    pass
