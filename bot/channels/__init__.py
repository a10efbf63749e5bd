"""Outbound notification channels other than Slack (issue 15, item 3): e-mail (``email``), the
signed outgoing webhook (``webhook``), and the worker that delivers e-mail and webhook pages
(``worker``). Slack stays in ``bot/slack``."""
