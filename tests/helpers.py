"""Small readers of what Genie said, shared by the tests."""

from __future__ import annotations

from typing import Any, Iterator

import httpx


def walk(blocks: Any) -> Iterator[dict]:
    """Every dict inside a Block Kit structure."""
    if isinstance(blocks, dict):
        yield blocks
        for value in blocks.values():
            yield from walk(value)
    elif isinstance(blocks, list):
        for item in blocks:
            yield from walk(item)


def block_text(blocks: Any) -> str:
    """All the text a person would read in these blocks."""
    return " ".join(d["text"] for d in walk(blocks) if isinstance(d.get("text"), str))


def buttons(blocks: Any) -> dict[str, dict]:
    """Buttons by action_id."""
    return {d["action_id"]: d for d in walk(blocks) if d.get("type") == "button"}


def ack_json(response: httpx.Response) -> dict:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json() if response.content else {}


def connect_url(response: httpx.Response) -> str:
    body = ack_json(response)
    return buttons(body["blocks"])["connect_link"]["url"]
