"""A multi-turn chat over a loaded pair: the logic of `blendin chat`, without a terminal.

`ChatSession.handle(line)` takes one line typed by the user (a question or a /command) and
writes through a `ChatOutput`: the answer as it streams, then one stats line. Tests feed it
lines and read a `BufferOutput`; the CLI (cli_chat.py) gives it a terminal.

The conversation is a list of Messages: the guide sees it through its chat template, the base
in the paper's plain form (earlier turns as "Question: ...\\n{answer}\\n"). Each turn's prompt
starts with the previous turn's prompt, so both models keep their KV caches and evaluate only
what follows the part they hold: usually the new question alone (the answer is cached already),
from an earlier point where the answer's tokens differ from how the tokenizer splits its text.

Ctrl-C (KeyboardInterrupt) during an answer stops that answer only: the partial answer stays
in the history (the session says so), and the next line is read as usual. No line ends the
session but /exit: one that is not valid UTF-8 is refused in one line, a command that fails says
why, and even a fault of this program is reported and the conversation kept.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from blendin_local.engine.generation import GenerationResult
from blendin_local.engine.methods import METHODS
from blendin_local.engine.prompts import Message, utf8_problem
from blendin_local.engine.settings import ALPHA_AUTO, GAMMA_EVERY_TOKEN, MAX_DRAFT, GenerationSettings, check_anti
from blendin_local.engine.speculation import SpeculationStats
from blendin_local.errors import BlendinError
from blendin_local.file_replace import replace_file
from blendin_local.user_paths import user_path

HELP = """commands:
  /trace on|off     colour each piece by who decided it (base plain, blend yellow, guide green)
  /method NAME      one of: {methods}
  /gamma X          intervene when the base's top-1 probability is below X ({every_token}: always)
  /alpha X|auto     weight of the guide in an intervention
  /speculative K    the guide drafts K tokens for the base to check at once (0: off; same text)
  /reset            forget the conversation (keeps the settings)
  /save FILE        write the conversation and each turn's statistics as JSON
  /settings         show the current settings
  /help             this list
  /exit             leave (Ctrl-D too); Ctrl-C stops the current answer only""".format(
    methods=", ".join(METHODS), every_token=GAMMA_EVERY_TOKEN
)
UNEXPECTED_ERROR = "error: unexpected"  # starts the line of a fault that no check foresaw


class ChatOutput(Protocol):
    def answer(self, text: str, source: str | None) -> None:
        """Streamed answer text; `source` ("base", "blend", "guide") only while /trace is on."""

    def info(self, line: str) -> None:
        """A whole line for the user: a stats line, a command's reply, an error."""

    def end_line(self) -> None:
        """End the answer's last line, if the answer did not."""


@dataclass
class BufferOutput:
    """Collects everything, for tests and scripts: `text` is what a terminal would show (uncoloured)."""

    parts: list[tuple[str, str, str | None]] = field(default_factory=list)  # (kind, text, source)

    def answer(self, text: str, source: str | None) -> None:
        self.parts.append(("answer", text, source))

    def info(self, line: str) -> None:
        self.parts.append(("info", line, None))

    def end_line(self) -> None:
        if self.parts and self.parts[-1][0] == "answer" and not self.parts[-1][1].endswith("\n"):
            self.parts.append(("answer", "\n", None))

    @property
    def text(self) -> str:
        return "".join(text if kind == "answer" else f"{text}\n" for kind, text, _ in self.parts)

    def infos(self) -> list[str]:
        return [text for kind, text, _ in self.parts if kind == "info"]

    def clear(self) -> None:
        self.parts.clear()


@dataclass
class Turn:
    question: str
    result: GenerationResult


def stats_line(r: GenerationResult, first_token_s: float | None) -> str:
    alpha = "-" if r.alpha_mean is None else f"{r.alpha_mean:.2f}"
    first = "-" if first_token_s is None else f"{first_token_s:.2f}s"
    speculation = SpeculationStats.of(r.speculation)
    return (
        f"[{r.method}] {r.n_tokens} tokens, {r.tokens_per_s:.1f} tokens/s, first token {first},"
        f" {r.n_interventions} from the guide (intervention rate {100 * r.intervention_rate:.1f}%),"
        f" mean alpha {alpha}, stop: {r.stop_reason}" + (f"; {speculation.line()}" if speculation else "")
    )


class ChatSession:
    def __init__(
        self,
        pair,
        settings: GenerationSettings | None = None,
        output: ChatOutput | None = None,
        trace: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.pair = pair
        self.settings = settings or GenerationSettings()
        self.output: ChatOutput = output if output is not None else BufferOutput()
        self.trace = trace
        self.history: list[Message] = []
        self.turns: list[Turn] = []
        self.closed = False
        self._clock = clock

    # -- input ------------------------------------------------------------------------------

    def run(self, lines: Iterable[str]) -> None:
        """Handle lines until /exit or the end of the input (Ctrl-D in a terminal)."""
        for line in lines:
            try:
                if not self.handle(line):
                    break
            except KeyboardInterrupt:  # Ctrl-C just outside an answer (ask() handles it inside one)
                self.output.end_line()
                self.output.info("interrupted")
            except Exception as e:  # a fault of this program, not of the line: the conversation outlives it
                self.output.end_line()
                self.output.info(
                    f"{UNEXPECTED_ERROR} {type(e).__name__}: {e} (the conversation is kept; /save writes it)"
                )
        self.closed = True

    def handle(self, line: str) -> bool:
        """One line of input; False once the session should end."""
        line = line.rstrip("\r\n")
        problem = utf8_problem(line)
        if problem is not None:
            self.output.info(f"that line is not valid UTF-8 ({problem}): ignored")
            return True
        if not line.strip():
            return True
        if line.lstrip().startswith("/"):
            return self.command(line.strip())
        self.ask(line)
        return True

    # -- commands ---------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        try:
            words = shlex.split(line)
        except ValueError as e:
            self.output.info(f"cannot read that command: {e}")
            return True
        name, args = words[0].lower(), words[1:]
        if name in ("/exit", "/quit"):
            return False
        handler = {
            "/trace": self._trace,
            "/method": self._method,
            "/gamma": self._gamma,
            "/alpha": self._alpha,
            "/speculative": self._speculative,
            "/reset": self._reset,
            "/save": self._save,
            "/settings": self._show,
            "/help": self._help,
        }.get(name)
        if handler is None:
            self.output.info(f"unknown command {name} (/help lists them)")
            return True
        try:
            handler(args)
        except BlendinError as e:
            self.output.info(f"error: {e}")
        return True

    def _one_arg(self, args: list[str], usage: str) -> str:
        if len(args) != 1:
            raise BlendinError(f"usage: {usage}")
        return args[0]

    def _trace(self, args: list[str]) -> None:
        value = self._one_arg(args, "/trace on|off").lower()
        if value not in ("on", "off"):
            raise BlendinError("usage: /trace on|off")
        self.trace = value == "on"
        self.output.info("trace on: base plain, blend yellow, guide green" if self.trace else "trace off")

    def _update(self, **values) -> None:
        self.settings = GenerationSettings.checked(**{**self.settings.model_dump(), **values})

    def _method(self, args: list[str]) -> None:
        method = self._one_arg(args, f"/method {'|'.join(METHODS)}").lower()
        if method not in METHODS:
            raise BlendinError(f"unknown method {method!r} (one of: {', '.join(METHODS)})")
        check_anti(method, self.pair.anti is not None, asked_as=method, remedy="start the chat with --anti PATH|NAME")
        self._update(method=method)
        self.output.info(f"method {method}")

    def _number(self, text: str, what: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise BlendinError(f"{what} must be a number (got {text!r})") from None

    def _gamma(self, args: list[str]) -> None:
        self._update(gamma=self._number(self._one_arg(args, "/gamma X"), "gamma"))
        self.output.info(f"gamma {self.settings.gamma:g}")

    def _alpha(self, args: list[str]) -> None:
        value = self._one_arg(args, f"/alpha X|{ALPHA_AUTO}")
        self._update(alpha=ALPHA_AUTO if value.lower() == ALPHA_AUTO else self._number(value, "alpha"))
        self.output.info(f"alpha {ALPHA_AUTO if self.settings.alpha is None else f'{self.settings.alpha:g}'}")

    def _speculative(self, args: list[str]) -> None:
        text = self._one_arg(args, f"/speculative K (0 to {MAX_DRAFT})")
        if not (text.isascii() and text.isdigit() and len(text) <= 3):
            raise BlendinError(f"usage: /speculative K, a whole number from 0 to {MAX_DRAFT}")
        self._update(speculative=int(text))
        k = self.settings.speculative
        self.output.info(f"speculative {k}" if k else "speculative off")

    def _reset(self, args: list[str]) -> None:
        self.history.clear()
        self.turns.clear()
        self.output.info("conversation cleared")

    def _save(self, args: list[str]) -> None:
        path = user_path(self._one_arg(args, "/save FILE"))
        try:
            if not path.parent.is_dir():  # as a shell's redirection: a mistyped folder is not made
                raise FileNotFoundError(2, "No such file or directory")
            replace_file(path, json.dumps(self.transcript(), ensure_ascii=False, indent=2) + "\n")
        except OSError as e:
            raise BlendinError(f"cannot write {path}: {e.strerror or e}") from None
        except ValueError as e:  # a NUL in the path
            raise BlendinError(f"cannot write {str(path)!r}: {e}") from None
        self.output.info(f"saved {len(self.turns)} turns to {path}")

    def _show(self, args: list[str]) -> None:
        s = self.settings
        alpha = ALPHA_AUTO if s.alpha is None else f"{s.alpha:g}"
        self.output.info(
            f"method {s.method}, gamma {s.gamma:g}, alpha {alpha}, temperature {s.temperature:g},"
            f" max tokens {s.max_tokens}, speculative {s.speculative or 'off'}, trace {'on' if self.trace else 'off'},"
            f" {len(self.turns)} turns in the history"
        )

    def _help(self, args: list[str]) -> None:
        for line in HELP.splitlines():
            self.output.info(line)

    def transcript(self) -> dict:
        return {
            "base": self.pair.base.name,
            "guide": self.pair.guide.name,
            "settings": self.settings.model_dump(),
            "messages": [{"role": m.role, "content": m.content} for m in self._conversation()],
            "turns": [{"question": t.question, **t.result.as_dict(with_trace=False)} for t in self.turns],
        }

    # -- answering --------------------------------------------------------------------------

    def _conversation(self, question: str | None = None) -> list[Message]:
        messages = []
        if self.settings.system:
            messages.append(Message("system", self.settings.system))
        messages.extend(self.history)
        if question is not None:
            messages.append(Message("user", question))
        return messages

    def ask(self, question: str) -> GenerationResult | None:
        """Answer one question, streaming; the question and the answer join the history."""
        generation = None
        first_token_at = None
        started = self._clock()
        try:
            generation = self.pair.start(self._conversation(question), self.settings)
            for event in generation.steps():
                if event.text and first_token_at is None:
                    first_token_at = self._clock()
                if event.text:
                    self.output.answer(event.text, event.entry.source if self.trace else None)
            finished = generation.finish()
            if finished.text and first_token_at is None:
                first_token_at = self._clock()
            if finished.text:
                self.output.answer(finished.text, None)
            result = finished.result
        except BlendinError as e:
            self.output.end_line()
            self.output.info(f"error: {e}" + ("" if not self.history else " (/reset clears the conversation)"))
            return None
        except KeyboardInterrupt:
            if generation is None:
                self.output.end_line()
                self.output.info("interrupted before the answer started; the question was dropped")
                return None
            finished = generation.finish("interrupted")
            if finished.text:
                self.output.answer(finished.text, None)
            result = finished.result
            self.output.end_line()
            self.output.info("interrupted: the partial answer is kept in the history (/reset clears it)")
        self.output.end_line()
        self.history += [Message("user", question), Message("assistant", result.text.strip())]
        self.turns.append(Turn(question, result))
        self.output.info(stats_line(result, None if first_token_at is None else first_token_at - started))
        return result
