"""Use cases. No Slack, HTTP or Bolt imports: they take a session and plain values and return
values (or raise a ``GenieError`` carrying the person-facing text)."""
