"""The fake Slack the benchmarks run against: the tests' (``tests/fake_slack.py``), which can
also apply Slack's per-channel rate limit on posting (``chat.postMessage`` about one message
per second per channel, ``429`` with ``Retry-After`` beyond that).

    fake = RateLimitedFakeSlack().start()
    fake.limit_per_channel(1.0)            # off by default: the fake behaves as before
    fake.limited                           # how many 429s it answered
"""

from __future__ import annotations

from tests.fake_slack import LIMITED_METHODS, FakeSlack

__all__ = ["LIMITED_METHODS", "RateLimitedFakeSlack"]


class RateLimitedFakeSlack(FakeSlack):
    """The tests' fake Slack (the limit now lives there: ``FakeSlack.limit_per_channel``)."""
