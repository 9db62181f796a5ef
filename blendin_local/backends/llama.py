"""A thin owner of one llama.cpp model, its context and a batch, over llama-cpp-python's raw bindings.

Only what the decode loop needs: tokenize, the byte piece of every token, evaluate a token
sequence incrementally (the KV cache keeps the longest common prefix, the rest is rolled back
and re-evaluated in batches) and hand back full-vocabulary logits of the last positions.
`logits_all` is never used: its n_ctx x n_vocab buffer is gigabytes for a 262k vocabulary.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import llama_cpp.llama_cpp as llama
import numpy as np

from blendin_local.backends.cpu_kernels import GATE, repack_setting
from blendin_local.backends.gguf_file import check_gguf_file, display_name, explain_load_failure
from blendin_local.engine.model import ContextFull
from blendin_local.errors import BlendinError

T = TypeVar("T")
_KEPT_ROWS = 4
_NULL_LOG = llama.llama_log_callback(lambda level, text, user_data: None)
_backend_ready = False


def init_backend() -> None:
    """Silence llama.cpp's logging (it writes straight to stderr) and initialise it once."""
    global _backend_ready
    if not _backend_ready:
        llama.llama_log_set(_NULL_LOG, ctypes.c_void_p())
        llama.llama_backend_init()
        _backend_ready = True


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Ctrl-C during a long llama.cpp call (a model load) raises KeyboardInterrupt once the call
    returns. llama.cpp calls back into Python as it logs (the silencing callback above), and an
    interrupt raised inside a ctypes callback is only printed, as a traceback, and then lost:
    the load went on. Signals go to the main thread only; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return
    arrived: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if arrived:
        raise KeyboardInterrupt


def made_interruptibly(create: Callable[[], T], free: Callable[[T], None]) -> T:
    """What a long llama.cpp call creates (a model, a context), with Ctrl-C deferred to its end
    (interrupt_after); made as the interrupt came, it is freed, not leaked."""
    made = None
    try:
        with interrupt_after():
            made = create()
    except KeyboardInterrupt:
        if made:
            free(made)
        raise
    return made


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


ALL_LAYERS = -1  # llama.cpp reads any count above the model's layers as all of them; -1 spells it


def gpu_layers_for(asked: int | None, supports_offload: bool) -> int:
    """Layers to offload: what was asked, else all of them where this llama.cpp build can offload
    (Metal, CUDA, Vulkan: as llama.cpp's own tools do since they default -ngl to all), else none."""
    if asked is not None:
        return asked
    return ALL_LAYERS if supports_offload else 0


def supports_gpu_offload() -> bool:
    return bool(llama.llama_supports_gpu_offload())


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    gpu_layers: int | None = None  # None: all where the build can offload, else none (gpu_layers_for)
    vocab_only: bool = False  # the tokenizer alone: no weights, no context (for bridge reports)
    repack: str | None = (
        None  # llama.cpp's extra CPU buffers: auto|on|off, None = $BLENDIN_REPACK or auto (cpu_kernels.py)
    )


class LlamaModel:
    """One GGUF model with one context. Not thread-safe: one caller at a time."""

    def __init__(self, path: str | Path, options: LoadOptions = LoadOptions()):
        path = Path(path)
        header = check_gguf_file(path)
        init_backend()
        self.path = path
        self.name = display_name(header, path)  # general.name and the quant: an Ollama blob has no name of its own
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = gpu_layers_for(options.gpu_layers, supports_gpu_offload())
        model_params.vocab_only = options.vocab_only
        if not options.vocab_only:
            # Decided once per process, before the first weights load (a crash here is a signal).
            model_params.use_extra_bufts = GATE.allows_extra_buffers(repack_setting(options.repack), [path])
        self.uses_extra_buffers = bool(model_params.use_extra_bufts)  # AMX/repacked weights: part of the numbers
        model = made_interruptibly(
            lambda: llama.llama_model_load_from_file(str(path).encode(), model_params), llama.llama_model_free
        )
        if not model:
            raise BlendinError(explain_load_failure(path))
        self._model = model
        self._vocab = llama.llama_model_get_vocab(model)
        self.n_vocab = llama.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = llama.llama_model_n_ctx_train(model)

        self._ctx = None
        self.threads: int | None = None  # of its context; a greedy text depends on it (docs/design.md)
        if not options.vocab_only:
            try:
                self._create_context(options)
            except BaseException:  # no context, or Ctrl-C as it was made: the weights are freed, not leaked
                self.close()
                raise
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._cached: list[int] = []  # the tokens whose keys and values the context holds
        self._rows: dict[int, np.ndarray] = {}  # logits by position, from recent evaluations
        self._prompt_len = 0  # of the current request
        self.pieces = self._read_pieces()
        vocab, tokens = self._vocab, range(self.n_vocab)
        is_eog, get_attr = llama.llama_vocab_is_eog, llama.llama_vocab_get_attr
        self.eog_ids = frozenset([t for t in tokens if is_eog(vocab, t)])
        hidden = llama.LLAMA_TOKEN_ATTR_CONTROL | llama.LLAMA_TOKEN_ATTR_UNUSED
        self.control_ids = frozenset([t for t in tokens if get_attr(vocab, t) & hidden])
        self.bos_id = llama.llama_vocab_bos(self._vocab)
        self.eos_id = llama.llama_vocab_eos(self._vocab)
        self.adds_bos = bool(llama.llama_vocab_get_add_bos(self._vocab))

    def _create_context(self, options: LoadOptions) -> None:
        threads = options.n_threads or default_threads()
        self.threads = threads
        ctx_params = llama.llama_context_default_params()
        ctx_params.n_ctx = min(options.n_ctx, self.n_ctx_train) if options.n_ctx > 0 else self.n_ctx_train
        ctx_params.n_batch = options.n_batch
        ctx_params.n_ubatch = options.n_batch
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        # A full-size sliding-window cache (Gemma 3) is what makes rolling back possible.
        ctx_params.swa_full = True
        ctx = made_interruptibly(lambda: llama.llama_init_from_model(self._model, ctx_params), llama.llama_free)
        if not ctx:
            raise BlendinError(f"{self.path}: llama.cpp could not create a context of {ctx_params.n_ctx} tokens")
        # What llama.cpp allocated, not what was asked: it rounds the context up (16 -> 256) but
        # caps the batch at the requested context, and a larger batch aborts the process.
        n_batch = min(options.n_batch, llama.llama_n_batch(ctx), llama.llama_n_ubatch(ctx))
        self._batch = llama.llama_batch_init(n_batch, 0, 1)
        self._ctx = ctx  # set last: close() frees the batch with it
        self._memory = llama.llama_get_memory(ctx)
        self.n_ctx = llama.llama_n_ctx(ctx)
        self.n_batch = n_batch

    # -- vocabulary -------------------------------------------------------------------------

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The raw bytes of one token; control tokens are empty unless `special`."""
        n = llama.llama_token_to_piece(self._vocab, token, self._piece_buffer, len(self._piece_buffer), 0, special)
        if n < 0:
            self._piece_buffer = ctypes.create_string_buffer(-n)
            n = llama.llama_token_to_piece(self._vocab, token, self._piece_buffer, -n, 0, special)
        return self._piece_buffer.raw[:n]

    def _read_pieces(self) -> list[bytes]:
        """token_bytes of every token, in one tight loop (262k ctypes calls for Gemma 3)."""
        buf, size, vocab, to_piece = (
            self._piece_buffer,
            len(self._piece_buffer),
            self._vocab,
            llama.llama_token_to_piece,
        )
        pieces: list[Any] = []  # bytes: a char array's slice is bytes, which ctypes' stubs do not know
        append = pieces.append
        for t in range(self.n_vocab):
            n = to_piece(vocab, t, buf, size, 0, False)
            append(buf[:n] if n >= 0 else self.token_bytes(t))
        return pieces

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Tokens of `text`, which must be complete UTF-8 (llama.cpp has aborted on less)."""
        capacity = len(text) + 8
        out = (llama.llama_token * capacity)()
        n = llama.llama_tokenize(self._vocab, text, len(text), out, capacity, add_bos, special)
        if n < 0:
            capacity = -n
            out = (llama.llama_token * capacity)()
            n = llama.llama_tokenize(self._vocab, text, len(text), out, capacity, add_bos, special)
        return list(out[:n])

    def metadata(self, key: str) -> str | None:
        size = llama.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return None
        buf = ctypes.create_string_buffer(size + 1)
        llama.llama_model_meta_val_str(self._model, key.encode(), buf, size + 1)
        return buf.value.decode("utf-8", errors="replace")

    # -- evaluation -------------------------------------------------------------------------
    #
    # llama.cpp's CPU kernels do not give bit-identical logits for a token evaluated alone and
    # the same token inside a batch (measured on Gemma 3: up to one logit apart). So the
    # evaluation schedule is kept a function of the request alone: a request that does not
    # continue the previous one starts from a clean cache, and the last prompt token is always
    # evaluated in a batch of its own. A repeated request then gives the same output as the
    # first time, and a chat turn reuses the cache of the turns before it.

    def begin_request(self, prompt: Sequence[int]) -> None:
        common = common_prefix_len(self._cached, prompt)
        self._truncate(min(common, len(prompt) - 1) if common >= self._prompt_len else 0)
        self._prompt_len = len(prompt)

    def logits(self, tokens: Sequence[int], n_last: int = 1) -> np.ndarray:
        """Logits (float32, shape n_last x n_vocab) after each of the last `n_last` tokens.

        The context is made to hold exactly `tokens`: the common prefix with what it holds is
        kept, the rest removed, the new tail evaluated in batches of at most n_batch. The array
        may be a read-only view of the rows this model keeps (copy it to modify it).
        """
        n = len(tokens)
        if n == 0:
            raise ValueError("cannot evaluate an empty token sequence")
        if n > self.n_ctx:
            raise ContextFull(n, self.n_ctx)
        wanted = range(n - n_last, n)
        common = common_prefix_len(self._cached, tokens)
        missing = [p for p in wanted if p >= common or p not in self._rows]
        if missing:
            self._truncate(min(common, missing[0]))
            self._evaluate(tokens, set(wanted))
        if n_last == 1:
            return self._rows[n - 1][np.newaxis]  # a read-only view of the kept row: no 1 MB copy
        return np.stack([self._rows[p] for p in wanted])

    def _truncate(self, keep: int) -> None:
        if keep < len(self._cached):
            if not llama.llama_memory_seq_rm(self._memory, 0, keep, -1):
                llama.llama_memory_clear(self._memory, True)
                keep = 0
            del self._cached[keep:]
        self._rows = {p: row for p, row in self._rows.items() if p < keep}

    def _evaluate(self, tokens: Sequence[int], wanted: set[int]) -> None:
        start, end = len(self._cached), len(tokens)
        last_prompt = self._prompt_len - 1
        splits = [last_prompt] if start < last_prompt < end else []
        bounds = [start, *splits, end]
        for seg_start, seg_end in zip(bounds, bounds[1:], strict=False):
            for chunk_start in range(seg_start, seg_end, self.n_batch):
                self._decode(tokens[chunk_start : min(seg_end, chunk_start + self.n_batch)], chunk_start, wanted)
        # Rows are a megabyte each at a 262k vocabulary: keep only the few a caller may revisit.
        self._rows = {p: row for p, row in self._rows.items() if p >= end - _KEPT_ROWS or p in wanted}

    def _decode(self, chunk: Sequence[int], chunk_start: int, wanted: set[int]) -> None:
        batch = self._batch
        batch.n_tokens = len(chunk)
        for i, token in enumerate(chunk):
            batch.token[i] = token
            batch.pos[i] = chunk_start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = chunk_start + i in wanted
        status = llama.llama_decode(self._ctx, batch)
        if status != 0:
            # The failed chunk may be partly in the cache: drop it so the state is known.
            llama.llama_memory_seq_rm(self._memory, 0, chunk_start, -1)
            raise BlendinError(f"{self.name}: llama_decode failed with status {status}")
        self._cached.extend(chunk)
        for i in range(len(chunk)):
            if chunk_start + i in wanted:
                row = np.empty(self.n_vocab, dtype=np.float32)
                ctypes.memmove(row.ctypes.data, llama.llama_get_logits_ith(self._ctx, i), row.nbytes)
                row.flags.writeable = False  # handed out as views: nobody may change a kept row
                self._rows[chunk_start + i] = row

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama.llama_batch_free(self._batch)
            llama.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            llama.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if type(a) is list and type(b) is list:
        # Called at every step on the whole sequence: compare in C, not one element at a time.
        if (a if len(a) == n else a[:n]) == (b if len(b) == n else b[:n]):
            return n
        if n > 64:
            differ = np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64)
            return int(differ.argmax())
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
