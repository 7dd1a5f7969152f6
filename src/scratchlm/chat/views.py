"""How the chat looks: `RichView` (a start panel, replies streamed live into a bordered panel)
when standard input and output are terminals, `PlainView` otherwise (replies on stdout, status
lines on stderr, no colors), so `printf 'hi\\nquit\\n' | scratchlm chat --checkpoint X` scripts it.
`ChatApp` talks to the screen only through the `ChatView` protocol."""

from __future__ import annotations

import contextlib
import sys
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text


# Control characters in a reply (a small model emits any byte) would move the cursor or ring the
# bell; shown as their Unicode "control pictures" (U+2400 + code) instead. Newlines and tabs stay.
_VISIBLE_CONTROLS = {code: 0x2400 + code for code in range(32) if chr(code) not in "\n\t"}
_VISIBLE_CONTROLS[0x7F] = 0x2421


def visible_text(text: str) -> str:
    return text.translate(_VISIBLE_CONTROLS)


# --- views ----------------------------------------------------------------------------------------


class ChatView(Protocol):
    def start(self, title: str, rows: list[tuple[str, str]]) -> None: ...  # the start panel
    def table(self, title: str, rows: list[tuple[str, str]]) -> None: ...  # asked-for output
    def info(self, text: str) -> None: ...  # output the user asked for (/help, /settings)
    def notice(self, text: str) -> None: ...  # status: statistics, dropped turns, saved files
    def error(self, text: str) -> None: ...
    def begin_reply(self) -> None: ...
    def reply_delta(self, text: str) -> None: ...
    def end_reply(self, interrupted: bool) -> None: ...
    def read_line(self) -> str: ...  # raises EOFError (Ctrl-D, end of input), KeyboardInterrupt
    def end_session(self) -> None: ...


class PlainView:
    """Plain text: replies on `output`, everything else on `status`, so a script reading stdout
    gets the replies alone. Prompts only when the input is a terminal (`--plain` in a shell)."""

    def __init__(
        self,
        input_stream: IO[str] | None = None,
        output: IO[str] | None = None,
        status: IO[str] | None = None,
    ) -> None:
        self.input_stream = input_stream or sys.stdin
        self.output = output or sys.stdout
        self.status = status or sys.stderr

    def _write(self, stream: IO[str], text: str) -> None:
        stream.write(text)
        stream.flush()

    def _table_text(self, title: str, rows: list[tuple[str, str]]) -> str:
        return "\n".join([title, *(f"  {key}: {value}" for key, value in rows)]) + "\n"

    def start(self, title: str, rows: list[tuple[str, str]]) -> None:
        self._write(self.status, self._table_text(title, rows))

    def table(self, title: str, rows: list[tuple[str, str]]) -> None:
        self._write(self.output, self._table_text(title, rows))

    def info(self, text: str) -> None:
        self._write(self.output, text + "\n")

    def notice(self, text: str) -> None:
        self._write(self.status, f"[{text}]\n")

    def error(self, text: str) -> None:
        self._write(self.status, f"error: {text}\n")

    def begin_reply(self) -> None:
        pass

    def reply_delta(self, text: str) -> None:
        self._write(self.output, visible_text(text))

    def end_reply(self, interrupted: bool) -> None:
        self._write(self.output, "\n")

    def read_line(self) -> str:
        if self.input_stream.isatty():
            self._write(self.status, "you> ")
        line = self.input_stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def end_session(self) -> None:
        # After Ctrl-D at a prompt the cursor sits on the prompt line; a script needs no newline.
        if self.input_stream.isatty():
            self._write(self.status, "\n")


class RichView:
    """Panels and colors; the reply streams into a bordered panel redrawn by `rich.live.Live`."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(highlight=False)
        self.reply: Text | None = None
        self.live: Live | None = None
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  # line editing and history for input()

    def table(self, title: str, rows: list[tuple[str, str]]) -> None:
        from rich.panel import Panel
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for key, value in rows:
            grid.add_row(key, value)
        self.console.print(Panel(grid, title=title, title_align="left", border_style="blue"))

    def start(self, title: str, rows: list[tuple[str, str]]) -> None:
        self.table(title, rows)

    def info(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text))

    def notice(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text, style="dim"))

    def error(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(f"error: {text}", style="bold red"))

    def _panel(self, subtitle: str | None = None) -> Any:
        from rich.panel import Panel
        from rich.text import Text

        body = self.reply if self.reply else Text("…", style="dim")
        return Panel(
            body,
            title="assistant",
            title_align="left",
            subtitle=subtitle,
            subtitle_align="right",
            border_style="green",
        )

    def begin_reply(self) -> None:
        from rich.live import Live
        from rich.text import Text

        self.reply = Text()
        # "visible": a reply taller than the screen scrolls instead of being cut off.
        self.live = Live(
            self._panel(),
            console=self.console,
            refresh_per_second=12,
            vertical_overflow="visible",
        )
        self.live.start()

    def reply_delta(self, text: str) -> None:
        assert self.reply is not None and self.live is not None
        self.reply.append(visible_text(text))
        self.live.update(self._panel())

    def end_reply(self, interrupted: bool) -> None:
        if self.live is None:
            return
        self.live.update(self._panel("stopped" if interrupted else None), refresh=True)
        self.live.stop()
        self.live = None

    def read_line(self) -> str:
        from rich.text import Text

        return self.console.input(Text("you> ", style="bold cyan"))

    def end_session(self) -> None:
        self.console.print()
