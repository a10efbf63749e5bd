"""On call (issue 15). ``schedule``: the pure schedule maths. The storage-backed services are
``bot.services.schedules`` and ``bot.services.escalation``; paging is not built yet."""
