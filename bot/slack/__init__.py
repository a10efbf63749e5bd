"""Everything that talks to Slack outside the Bolt listeners (architecture.md):

- ``clients``: the Web API client (bot token) per workspace, and what a call can fail with;
- ``delivery``: the outbox worker, the only sender of chat messages;
- ``home``: the App Home tab, drawn and published (``views.publish``);
- ``notify``: the DMs queued after a change to a person's links or password; the invitation;
- ``profiles``: who a Slack user is (``users.info``);
- ``render``: stored alerts and links as the plain views the builders draw;
- ``directory_sync``: ``genie slack sync``;
- ``socket_mode``: Slack over a WebSocket instead of HTTP;
- ``screening``: the screen in front of Bolt for ``POST /slack/events``.

Listeners, web and CLI import this package; it imports services and blocks, never the reverse.
"""
