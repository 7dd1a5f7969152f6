"""`scratchlm chat`: a multi-turn terminal chat whose KV cache carries the conversation.

`conversation` holds the messages and fits them to the context (no torch, no terminal);
`commands` parses what the user types; `app` runs the conversation over the model; `views`
draws it (rich or plain text). The `chat` command itself is in `cli/chat.py`.
"""

from scratchlm.chat.conversation import Conversation, DroppedTurn

__all__ = ["Conversation", "DroppedTurn"]
