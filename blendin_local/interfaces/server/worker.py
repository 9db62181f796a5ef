"""The one thread that owns the pair, and the bounded queue of requests in front of it.

One pair, one generation at a time: the pair's models are not thread-safe, so a single worker
thread alone uses them and takes jobs from a queue; a job that finds the queue full is refused
with 503 at once. A job whose client left is cancelled: the running one stops at its next token,
a waiting one leaves the queue. Stopping (`GenerationWorker.begin_stop`, called from the signal
handler by `blendin serve`) ends the running generation at its next token and fails the waiting
ones with 503, so that a shutdown takes seconds, not a generation.

Each generation is bounded before it starts: max_tokens is clamped to the room left in the
context and to `max_tokens_limit`, and it ends after `request_timeout` seconds (stop reason
"time").
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from blendin_local.engine.generation import Generation, TraceEntry
from blendin_local.engine.prompts import Message, PromptFormatError
from blendin_local.engine.settings import GenerationSettings
from blendin_local.errors import BlendinError
from blendin_local.interfaces.server.errors import ApiError
from blendin_local.pair import as_messages

# How long a stopping server waits for the worker to end its token (one llama.cpp call: at most
# a batch of a prompt); with uvicorn's 2 s for open connections, a stop takes under 5 s.
STOP_WAIT_S = 2.0


@dataclass
class Job:
    """One request's generation, and the channel its events go back by to the request's coroutine.

    Events: ("started", Started), ("text", str) per printable piece, then one of ("done", (the
    last text, GenerationResult)), ("error", ApiError) or ("cancelled", GenerationResult). A job
    `with_pieces` (a stream asked with `"trace": true`, or for log-probabilities) also gets, just
    before each text event and before the end, ("pieces", the TraceEntries whose text it is):
    those that began before the end of the text handed out so far and were not posted yet
    (several where the text stream held bytes back: an incomplete UTF-8 character, a possible
    stop string). A token that only wrote a stop string is never posted.
    """

    prompt: str | list[Message]
    prompt_param: str  # the request field the prompt came from: messages or prompt
    settings: GenerationSettings
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    checked_at: float = field(default_factory=time.monotonic)  # when its client was last seen connected
    with_pieces: bool = False  # post each text's trace entries ("pieces") before it

    def post(self, kind: str, payload: Any = None) -> None:
        """From the worker thread: hand one event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the event loop is gone (the server is stopping)
            self.cancel.set()


@dataclass
class Started:
    prompt_tokens: int  # the base's (the guide's for method "guide"): the model that writes the answer
    prompt_tokens_base: int | None
    prompt_tokens_guide: int | None
    max_tokens: int
    max_tokens_requested: int
    max_tokens_limit: int | None
    time_limit_s: float | None

    @property
    def clamped(self) -> bool:
        return self.max_tokens < self.max_tokens_requested


@dataclass
class Counters:
    served: int = 0
    cancelled: int = 0
    rejected: int = 0
    failed: int = 0
    timed_out: int = 0
    last_cancelled_tokens: int | None = None


class GenerationWorker:
    """The pair, a worker thread that alone uses it, and the bounded queue in front of it.

    The worker is a daemon thread: if it is stuck in one long llama.cpp call when the server
    stops, the process can still exit (its caller must then not close the models under it).
    """

    def __init__(
        self, pair, queue_size: int, max_tokens_limit: int | None = None, request_timeout: float | None = None
    ):
        self.pair = pair
        self.queue_size = queue_size
        self.max_tokens_limit = max_tokens_limit
        self.request_timeout = request_timeout
        self.counters = Counters()
        self.running: Job | None = None
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending = 0  # jobs submitted and not finished: the running one and those waiting
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="blendin-pair", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return max(0, self._pending - (self.running is not None))

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Job) -> None:
        if self._thread is None:
            raise ApiError(503, "the server is not ready yet; retry later", type_="server_error")
        if self.stopping:
            raise ApiError(503, "the server is stopping", type_="server_error")
        with self._lock:
            # The running job is not waiting: queue_size more may wait (0: none may).
            if self._pending > self.queue_size:
                self.counters.rejected += 1
                raise ApiError(
                    503,
                    f"the server is busy: one request is running and {self._pending - 1} are waiting"
                    f" (queue size {self.queue_size}); retry later",
                    type_="server_error",
                    code="queue_full",
                )
            self._pending += 1
        self._jobs.put(job)

    def begin_stop(self) -> None:
        """Take no more jobs and end the running one at its next token. It only sets an event, so a
        signal handler may call it."""
        self._stopping.set()

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """begin_stop, fail the waiting jobs with 503, and wait up to `wait_s` for the worker to end
        (`alive` says whether it has)."""
        self.begin_stop()
        while True:  # the worker fails them too, once its job ends; this does not wait for that
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._refuse(job)
        if self._thread is None:
            return
        self._jobs.put(None)  # the worker's last item
        deadline = time.monotonic() + wait_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def _refuse(self, job: Job) -> None:
        job.post("error", ApiError(503, "the server is stopping", type_="server_error"))
        with self._lock:
            self._pending -= 1

    # In the worker thread, from here on.

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self.stopping:
                self._refuse(job)
                continue
            try:
                if job.cancel.is_set():  # its client left while it waited
                    self.counters.cancelled += 1
                else:
                    self.running = job
                    self._run(job)
            except Exception as e:  # _run reports its own errors; this is a last resort that keeps the worker going
                job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
            finally:
                self.running = None
                with self._lock:
                    self._pending -= 1

    def _run(self, job: Job) -> None:
        deadline = None if self.request_timeout is None else time.monotonic() + self.request_timeout
        try:
            started, generation = self._start(job)
        except PromptFormatError as e:
            job.post("error", ApiError(400, str(e), param=e.field or job.prompt_param))
            return
        except BlendinError as e:  # the prompt: empty, too long for the context, refused by a chat template
            job.post("error", ApiError(400, str(e), param=job.prompt_param))
            return
        except Exception as e:  # an engine bug: the server stays up, the client hears about it
            self.counters.failed += 1
            job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
            return
        job.post("started", started)
        steps = generation.steps()
        pieces: list[tuple[int, TraceEntry]] = []  # (text start, entry) not posted yet, for a job with_pieces
        handed_out = 0  # characters of text posted so far
        try:
            while True:  # a cancel, a stop and the time limit are each seen before the next step
                if job.cancel.is_set() or self.stopping:
                    result = generation.result("interrupted")
                    self.counters.cancelled += 1
                    self.counters.last_cancelled_tokens = result.n_tokens
                    job.post("cancelled", result)
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    self.counters.timed_out += 1
                    finished = generation.finish("time")
                    break
                event = next(steps, None)
                if event is None:
                    finished = generation.finish()
                    break
                if job.with_pieces:
                    pieces.append((event.text_start, event.entry))
                if event.text:
                    handed_out += len(event.text)
                    if job.with_pieces:
                        pieces = self._post_pieces(job, pieces, handed_out)
                    job.post("text", event.text)
            self.counters.served += 1
            if job.with_pieces:
                self._post_pieces(job, pieces, handed_out + len(finished.text))
            job.post("done", (finished.text, finished.result))
        except Exception as e:
            self.counters.failed += 1
            job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
        finally:
            steps.close()

    @staticmethod
    def _post_pieces(job: Job, pieces: list[tuple[int, TraceEntry]], text_end: int) -> list[tuple[int, TraceEntry]]:
        """Post the entries that began before `text_end` (the text handed out, in characters);
        return the rest. Starts only grow, so those are a prefix."""
        ready = 0
        while ready < len(pieces) and pieces[ready][0] < text_end:
            ready += 1
        job.post("pieces", [entry for _, entry in pieces[:ready]])
        return pieces[ready:]

    def _start(self, job: Job) -> tuple[Started, Generation]:
        settings = job.settings
        # Tokenizes the prompts once, each checked in bytes against its context first (prompts.py),
        # and raises a BlendinError when one does not fit; the lengths below are the Generation's.
        generation = Generation(self.pair, as_messages(job.prompt, settings.system), settings)
        used = {"base": settings.method != "guide", "guide": settings.method != "base"}
        lengths = {role: n for role, n in generation.prompt_lengths.items() if used[role]}
        models = {"base": self.pair.base, "guide": self.pair.guide}
        room = min(models[role].n_ctx - n for role, n in lengths.items())  # >= 1: Generation checked
        requested = settings.max_tokens
        generation.max_tokens = min(requested, room, self.max_tokens_limit or requested)
        started = Started(
            prompt_tokens=lengths.get("base", lengths.get("guide", 0)),
            prompt_tokens_base=lengths.get("base"),
            prompt_tokens_guide=lengths.get("guide"),
            max_tokens=generation.max_tokens,
            max_tokens_requested=requested,
            max_tokens_limit=self.max_tokens_limit,
            time_limit_s=self.request_timeout,
        )
        return started, generation
