"""Everything that talks to Slack outside the Bolt listeners: the Web API clients per
workspace (``clients``), the outbox worker that delivers every chat message (``delivery``),
App Home publishing and the DMs queued after a link (``notify``), the alert views drawn at
delivery (``render``), the directory sync (``directory_sync``) and Socket Mode
(``socket_mode``). See architecture.md."""
