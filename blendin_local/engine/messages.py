"""A conversation as people pass it: OpenAI-style message dicts, read into the engine's Messages.

One reading for the server's chat requests and the Python API (`pair.generate([{"role": "user",
"content": ...}])`): a role of system, user or assistant ("developer" is OpenAI's newer name for
system), content as a string or a list of text parts, a system message only first, and the
user's message last (the answer continues the conversation from there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blendin_local.engine.prompts import Message, preview
from blendin_local.errors import BlendinError

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}


class MessageError(BlendinError):
    """One message that cannot be read; `field` is the request field to name ("messages[2].role")."""

    def __init__(self, problem: str, field: str = "messages"):
        super().__init__(f"{field}: {problem}" if field != "messages" else problem)
        self.field = field


def message_text(content: Any, index: int) -> str:
    """The text of a message's content: a string, None (empty), or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise MessageError("only text content parts are supported", f"messages[{index}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise MessageError(
        f"content must be a string or a list of text parts, not {type(content).__name__}", f"messages[{index}].content"
    )


def read_message(item: Message | Mapping[str, Any] | Any, index: int) -> Message:
    role: Any
    content: Any
    if isinstance(item, Message):
        role, content = item.role, item.content
    elif isinstance(item, Mapping):
        role, content = item.get("role"), item.get("content")
    else:
        raise MessageError(
            f"a message is a dict with role and content (or a Message), not {type(item).__name__}",
            f"messages[{index}]",
        )
    if not isinstance(role, str):
        raise MessageError("role must be a string", f"messages[{index}].role")
    role = ROLE_ALIASES.get(role, role)
    if role not in ROLES:
        raise MessageError(f"role {preview(role)} is not supported ({', '.join(ROLES)})", f"messages[{index}].role")
    return Message(role, message_text(content, index))


def read_conversation(items: Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    """The engine's messages, or MessageError naming the first one that does not fit."""
    messages = [read_message(item, i) for i, item in enumerate(items)]
    if not messages:
        raise MessageError("messages is empty")
    for i, m in enumerate(messages):
        if m.role == "system" and i > 0:
            raise MessageError("a system message is supported only as the first message", f"messages[{i}].role")
    if messages[-1].role != "user":
        raise MessageError("the last message must be the user's: the answer continues the conversation from there")
    return messages
