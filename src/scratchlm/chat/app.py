"""The chat app: `ChatApp` runs a multi-turn conversation over one model, drawn by a view.

One `DecodeSession` holds the conversation's KV cache, so a turn prefills only what is new (the
last reply's end marker, the user's message and the generation prompt), not the whole history. A
reply's tokens are kept as generated and fed back verbatim next turn: re-encoding the decoded text
could tokenize differently and would defeat the prefix match.

`ChatApp` is the loop's body (`handle_line(text) -> bool`, False = quit) and talks to the screen
only through a view (`chat.views`); `run_loop` reads lines until the user leaves. The command
(`scratchlm chat`) is in `cli/chat.py`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchlm.chat.commands import (
    SETTING_TYPES,
    coerce_setting,
    help_lines,
    parse_line,
    parse_settings,
)
from scratchlm.chat.conversation import Conversation, DroppedTurn
from scratchlm.chat.views import ChatView
from scratchlm.chat_template import (
    Message,
    closed_reply,
    end_of_turn_id,
    generation_prompt,
    render,
)
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import (
    ASSISTANT_TOKEN,
    EOS_TOKEN,
    SYSTEM_TOKEN,
    USER_TOKEN,
    Tokenizer,
    require_unicode,
)

if TYPE_CHECKING:
    from scratchlm.inference.session import DecodeSession
    from scratchlm.inference.settings import SamplingSettings

# --- settings and statistics ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChatSettings:
    sampling: SamplingSettings
    max_new_tokens: int = 256
    seed: int | None = None  # turn N samples with seed + N, so turns differ but runs repeat

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ScratchLMError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self.sampling)
        values.update(max_new_tokens=self.max_new_tokens, seed=self.seed)
        return values

    def updated(self, changes: dict[str, Any]) -> ChatSettings:
        """A copy with `changes` (names as in SETTING_TYPES) applied and checked."""
        values = self.as_dict()
        for key, value in changes.items():
            values[key.strip().lower().replace("-", "_")] = coerce_setting(key, value)
        max_new_tokens, seed = values.pop("max_new_tokens"), values.pop("seed")
        return ChatSettings(dataclasses.replace(self.sampling, **values), max_new_tokens, seed)

    def describe(self) -> str:
        return ", ".join(f"{key}={_setting_text(value)}" for key, value in self.as_dict().items())


def _setting_text(value: Any) -> str:
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class TurnStats:
    tokens: int
    elapsed_s: float
    reused: int  # prompt tokens whose keys/values were already in the cache
    prefilled: int  # prompt tokens run through the model this turn
    finish: str  # "stop" (end marker), "length" (token limit), "interrupted" (Ctrl-C)

    def describe(self) -> str:
        rate = self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0
        unit = "token" if self.tokens == 1 else "tokens"
        text = (
            f"{self.tokens} {unit} · {rate:.1f} tok/s · {self.elapsed_s:.1f} s · "
            f"cache: reused {self.reused}, prefilled {self.prefilled}"
        )
        if self.finish == "interrupted":
            text += " · stopped (Ctrl-C)"
        elif self.finish == "length":
            text += " · cut at the token limit"
        return text


def describe_dropped(dropped: list[DroppedTurn]) -> str:
    tokens = sum(turn.tokens for turn in dropped)
    if len(dropped) == 1:
        return f"context full: dropped the oldest turn ({tokens} tokens)"
    return f"context full: dropped the {len(dropped)} oldest turns ({tokens} tokens)"


# --- the chat -------------------------------------------------------------------------------------


class ChatApp:
    def __init__(
        self,
        session: DecodeSession,
        tokenizer: Tokenizer,
        view: ChatView,
        *,
        settings: ChatSettings,
        conversation: Conversation | None = None,
        context_file: Path | None = None,
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.view = view
        self.settings = settings
        self.conversation = conversation or Conversation()
        self.context_file = context_file
        self.context_length = session.context_length
        self.turns = 0
        self.last_stats: TurnStats | None = None
        self.end_id = end_of_turn_id(tokenizer)
        self.assistant_id = tokenizer.special_id(ASSISTANT_TOKEN)
        # The end marker and EOS end a reply; so does a role marker: a model that starts a user or
        # system turn of its own has finished its reply.
        self.stop_ids = frozenset(
            {self.end_id, self.assistant_id}
            | {tokenizer.special_id(token) for token in (EOS_TOKEN, USER_TOKEN, SYSTEM_TOKEN)}
        )
        # Reply text -> the ids that produced it, for the replies still in the conversation.
        self.reply_ids: dict[str, list[int]] = {}

    # --- rendering ------------------------------------------------------------------------------
    def encode_message(self, message: Message) -> list[int]:
        """A message's ids: the chat template, except a reply we generated keeps its own ids."""
        if message["role"] == "assistant" and message["content"] in self.reply_ids:
            return closed_reply(self.tokenizer, self.reply_ids[message["content"]])
        return render([message], self.tokenizer)[0]

    def prompt_ids(self) -> list[int]:
        """The conversation rendered with the generation prompt, as fed to the model."""
        ids: list[int] = []
        for message in self.conversation.template_messages():
            ids += self.encode_message(message)
        return [*ids, *generation_prompt(self.tokenizer)]

    def reply_room(self) -> int:
        """Tokens kept free for a reply when fitting; at most half the context, so a long
        --max-new-tokens on a short context does not leave the history no room at all."""
        return max(1, min(self.settings.max_new_tokens, self.context_length // 2))

    # --- the loop body --------------------------------------------------------------------------
    def welcome(self, *, device: str, parameters: int, checkpoint: str) -> None:
        from scratchlm.config import format_count

        rows = [
            ("checkpoint", checkpoint),
            ("device", device),
            ("parameters", f"{format_count(parameters)} ({parameters:,})"),
            ("context", f"{self.context_length} tokens"),
            ("sampling", self.settings.describe()),
            ("system prompt", self.conversation.system or "none"),
        ]
        if self.conversation.messages:
            rows.append(("history", f"{len(self.conversation.messages)} messages"))
        self.view.start("scratchlm chat", rows)
        self.view.notice("type a message; /help for commands; quit, exit, q or Ctrl-D to leave")

    def handle_line(self, text: str) -> bool:
        """Act on one input line; False when the session should end."""
        try:
            # Invalid bytes typed or piped in arrive as lone surrogates (see cli.main); the line is
            # refused whole, before it can reach the conversation or a command.
            require_unicode(text, "that line")
            command = parse_line(text)
            if command.name == "quit":
                return False
            if command.name == "message":
                if command.argument:
                    self.send(command.argument)
                return True
            getattr(self, f"command_{command.name}")(command.argument)
        except ScratchLMError as error:
            self.view.error(str(error))
        return True

    def send(self, text: str) -> TurnStats:
        """Add the user's message, make room in the context, stream the reply, remember it."""
        message: Message = {"role": "user", "content": text}
        system = self.conversation.system
        system_tokens = (
            len(self.encode_message({"role": "system", "content": system})) if system else 0
        )
        alone = (
            system_tokens
            + len(self.encode_message(message))
            + len(generation_prompt(self.tokenizer))
        )
        if alone >= self.context_length:
            # Checked before anything is dropped: a message that can never fit costs no history.
            raise ScratchLMError(
                f"the message needs {alone} tokens with the system prompt but the context holds "
                f"{self.context_length}; send a shorter message"
            )
        self.conversation.add("user", text)
        dropped = self.conversation.fit(
            self.tokenizer,
            self.context_length,
            self.reply_room(),
            encode_message=self.encode_message,
        )
        if dropped:
            self.view.notice(describe_dropped(dropped))
            self._forget_stale_replies()
        prompt = self.prompt_ids()
        assert len(prompt) < self.context_length  # fit keeps at most the newest turn, checked above
        # The room left may be less than max_new_tokens when the newest turn alone is long.
        max_new_tokens = min(self.settings.max_new_tokens, self.context_length - len(prompt))
        reply, ids, stats = self._stream_reply(prompt, max_new_tokens)
        self.conversation.add("assistant", reply)
        # Kept even when decode(ids) != reply (bytes split by a cut or an invalid sequence): these
        # ids are what the cache holds for this reply, whatever text they displayed as.
        self.reply_ids[reply] = ids
        self._forget_stale_replies()
        self.turns += 1
        self.last_stats = stats
        self.view.notice(stats.describe())
        self.autosave()
        return stats

    def _stream_reply(
        self, prompt: list[int], max_new_tokens: int
    ) -> tuple[str, list[int], TurnStats]:
        from scratchlm.inference.streaming import IncrementalDecoder

        decoder = IncrementalDecoder(self.tokenizer)
        ids: list[int] = []
        pieces: list[str] = []
        seed = None if self.settings.seed is None else self.settings.seed + self.turns
        interrupted = False
        start = time.perf_counter()
        tokens = self.session.generate(
            prompt,
            max_new_tokens=max_new_tokens,
            sampling=self.settings.sampling,
            seed=seed,
            stop_ids=self.stop_ids,
        )
        self.view.begin_reply()
        try:
            for token in tokens:
                ids.append(token)
                delta = decoder.push(token)
                if delta:
                    pieces.append(delta)
                    self.view.reply_delta(delta)
        except KeyboardInterrupt:
            # Ctrl-C stops this reply only; what was generated stays in the conversation. The
            # session stays usable: its next prompt rolls the cache back to what it really holds.
            interrupted = True
        finally:
            if isinstance(tokens, Generator):
                tokens.close()  # free the generator's frame now, not at garbage collection
            tail = decoder.flush()
            if tail:
                pieces.append(tail)
                self.view.reply_delta(tail)
            self.view.end_reply(interrupted)
        elapsed = time.perf_counter() - start
        finish = "interrupted" if interrupted else self.session.finish_reason
        stats = TurnStats(len(ids), elapsed, self.session.reused, self.session.last_prefill, finish)
        return "".join(pieces), ids, stats

    def _forget_stale_replies(self) -> None:
        kept = {m["content"] for m in self.conversation.messages if m["role"] == "assistant"}
        self.reply_ids = {text: ids for text, ids in self.reply_ids.items() if text in kept}

    def autosave(self) -> None:
        """Write --context-file after every change, atomically; a failure is reported, not fatal."""
        if self.context_file is None:
            return
        try:
            self.save_to(self.context_file)
        except ScratchLMError as error:
            self.view.error(f"--context-file: {error}")

    def save_to(self, path: Path) -> None:
        self.conversation.settings = self.settings.as_dict()
        self.conversation.save(path)

    # --- commands (command_NAME for each name in commands.COMMANDS but quit) --------------------
    def command_help(self, argument: str) -> None:
        for line in help_lines():
            self.view.info(line)

    def command_reset(self, argument: str) -> None:
        self.conversation.clear()
        self.reply_ids = {}
        kept = " (the system prompt stays)" if self.conversation.system else ""
        self.view.notice(f"new conversation{kept}")
        self.autosave()

    def command_system(self, argument: str) -> None:
        if not argument:
            self.view.info(f"system prompt: {self.conversation.system or 'none'}")
            return
        self.conversation.system = None if argument.lower() == "none" else argument
        self.view.notice(
            "system prompt removed" if argument.lower() == "none" else "system prompt set"
        )
        self.autosave()

    def command_save(self, argument: str) -> None:
        path = Path(argument).expanduser()
        self.save_to(path)
        count = len(self.conversation.messages)
        self.view.notice(f"saved {count} messages to {path}")

    def command_load(self, argument: str) -> None:
        path = Path(argument).expanduser()
        loaded = Conversation.load(path)
        # Check the file's settings before changing anything, so a bad file leaves all as it was.
        settings = self.settings.updated(loaded.settings)
        self.conversation, self.settings, self.reply_ids = loaded, settings, {}
        self.view.notice(
            f"loaded {len(loaded.messages)} messages from {path}"
            + (" (with a system prompt)" if loaded.system else "")
        )
        self.autosave()

    def command_settings(self, argument: str) -> None:
        if argument:
            changes = parse_settings(argument)
            self.settings = self.settings.updated(changes)
            self.view.notice(
                "set "
                + ", ".join(f"{key}={_setting_text(value)}" for key, value in changes.items())
            )
            self.autosave()
            return
        values = self.settings.as_dict()
        self.view.table("settings", [(key, _setting_text(values[key])) for key in SETTING_TYPES])


def run_loop(app: ChatApp, view: ChatView) -> None:
    """Read lines until quit, Ctrl-D or Ctrl-C at the prompt (all clean exits)."""
    while True:
        try:
            line = view.read_line()
        except (EOFError, KeyboardInterrupt):
            view.end_session()
            return
        try:
            if not app.handle_line(line):
                return
        except KeyboardInterrupt:
            # Ctrl-C outside a reply (a slow /save, the statistics line) must not end the chat.
            view.notice("interrupted")
