"""A model behind an OpenAI-compatible server, with the interface the engine uses on LlamaModel.

`RemoteModel.logits(tokens, n_last)` asks `/v1/completions` for one token (`max_tokens: 1`,
`temperature: 0`) with the top-k log-probabilities of the next token, once per wanted row, and
turns the answer into a float32 row over the whole vocabulary:

- the k known tokens get their log-probabilities exactly;
- the unknown mass U = 1 - sum of the known probabilities is spread evenly over the other
  V - k tokens (each gets log(U / (V - k)), never more than the k-th known one).

The softmax of that row gives the known probabilities exactly, so the top-1 probability (the
BlendIn trigger) and the greedy choice are exact; blending, projection and proxy tuning work
on the known part plus an even floor. The vocabulary side (pieces, specials, tokenizer, chat
template) comes from a local file: vocab_sources.py.

Servers differ in what they accept and return; all of these are handled:
- prompt as text (llama-cpp-python's server accepts nothing else; the server tokenizes it again,
  which can differ from the engine's tokens) or as token ids (llama.cpp's llama-server, vLLM);
- top log-probabilities keyed by id (llama-server: `logprobs.content[].top_logprobs[].id`), by
  `token_id:N` (vLLM with `--return-tokens-as-token-ids`) or by the decoded token string (the
  OpenAI legacy form; llama-cpp-python decodes with errors="ignore", so every control token and
  every piece that is not whole UTF-8 is the key ""; a "" key is read as end-of-generation and
  its value fetched again where later "" tokens may have overwritten it);
- a server that stops at an end-of-generation token before reporting it (llama-cpp-python):
  asked again with those tokens biased away from sampling, which leaves the reported
  (pre-sampling) log-probabilities untouched.

Prompt caching: the requests of one generation share their prefix, so the server's prefix
cache (llama-server `cache_prompt`, vLLM's automatic prefix caching, llama-cpp-python's reuse of
its last prompt) evaluates only the new token. Rows are also kept here, for the few positions a
step asks twice.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from blendin_local.backends.vocab_sources import VocabSource
from blendin_local.engine.bridge import Vocabulary, byte_index
from blendin_local.engine.model import ContextFull
from blendin_local.errors import BlendinError

PROMPT_FORMATS = ("text", "tokens")
_KEPT_ROWS = 8
_RETRY_STATUS = {429, 500, 502, 503, 504}
_EOG_BIAS = -100.0


class UnrepresentablePrompt(ContextFull):
    """A text prompt that ends inside a UTF-8 character: JSON text cannot carry it.

    A ContextFull, so that generation ends there cleanly (stop_reason "context") instead of
    failing a whole evaluation; `--*-prompt-format tokens` has no such limit."""

    def __init__(self, model: str, n_tokens: int):
        BlendinError.__init__(
            self,
            f"{model}: the text so far ends inside a UTF-8 character, which a text prompt"
            " cannot carry (use --base-prompt-format/--guide-prompt-format tokens where the server"
            " accepts token ids)",
        )
        self.needed, self.n_ctx = n_tokens, n_tokens


@dataclass(frozen=True)
class RemoteSpec:
    """Where one model is served and how to ask it."""

    url: str  # the OpenAI-compatible base URL, e.g. http://host:8000/v1 (or without /v1)
    model: str | None = None  # the server's model name; None: the first one it lists
    top_k: int = 20  # log-probabilities asked per row (vLLM: at most its --max-logprobs)
    prompt_format: str = "text"  # "text" or "tokens"
    timeout: float = 60.0  # seconds for one request (connect and read)
    retries: int = 3  # attempts after the first, on connection errors, 429 and 5xx
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    n_ctx: int = 4096  # the context assumed at the server: longer sequences end generation

    def __post_init__(self):
        if self.prompt_format not in PROMPT_FORMATS:
            raise BlendinError(f"prompt format {self.prompt_format!r}: use text or tokens")
        if self.top_k < 1:
            raise BlendinError(f"top-k log-probabilities must be at least 1 (got {self.top_k})")
        if not self.url.startswith(("http://", "https://")):
            raise BlendinError(f"{self.url}: a server URL starts with http:// or https://")

    @property
    def api(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


class RemoteClient:
    """JSON over HTTP with timeouts and retries; every failure is one BlendinError line."""

    def __init__(self, spec: RemoteSpec):
        self.spec = spec
        self._http = httpx.Client(timeout=httpx.Timeout(spec.timeout), headers={"Authorization": "Bearer unused"})

    def request(self, method: str, path: str, payload: dict | None = None) -> dict:
        url = self.spec.api + path
        delay = self.spec.backoff
        for attempt in range(self.spec.retries + 1):
            last = attempt == self.spec.retries
            try:
                response = self._http.request(method, url, json=payload)
            except httpx.TimeoutException:
                raise BlendinError(
                    f"{url}: no answer within {self.spec.timeout:g} s (the server is too slow or"
                    " stuck; raise --remote-timeout)"
                ) from None
            except httpx.TransportError as e:
                if last:
                    raise BlendinError(
                        f"{url}: cannot reach the server ({type(e).__name__}: {e or 'no detail'};"
                        f" {attempt + 1} attempts)"
                    ) from None
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except (ValueError, RecursionError):  # nesting deeper than the parser recurses
                        raise BlendinError(
                            f"{url}: the server's answer is not JSON ({_excerpt(response.text)})"
                        ) from None
                if response.status_code not in _RETRY_STATUS or last:
                    raise ServerError(url, response.status_code, _error_message(response))
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._http.close()


class ServerError(BlendinError):
    def __init__(self, url: str, status: int, message: str):
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.status, self.message = status, message


def _excerpt(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text[:n] + ("..." if len(text) > n else ""))


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return _excerpt(response.text)
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return _excerpt(str(error) if not isinstance(error, str) else error)


class KeyIndex:
    """Token ids for the keys servers give top log-probabilities under (decoded strings)."""

    def __init__(self, vocab: VocabSource):
        self.vocab = vocab
        voc = Vocabulary(pieces=tuple(vocab.pieces), eog_ids=vocab.eog_ids, eos_id=vocab.eos_id)
        by_bytes = byte_index(voc, vocab.tokenize)
        self.by_bytes = by_bytes
        self.exact: dict[str, int] = {}
        loose: dict[str, set[int]] = {}
        for piece, token in by_bytes.items():
            try:
                self.exact[piece.decode("utf-8")] = token
            except UnicodeDecodeError:
                for errors in ("ignore", "replace"):
                    loose.setdefault(piece.decode("utf-8", errors), set()).add(token)
        self.loose = {key: next(iter(ids)) for key, ids in loose.items() if len(ids) == 1 and key not in self.exact}
        self.special: dict[str, int] = {}
        for token in sorted(vocab.control_ids | vocab.eog_ids):
            text = vocab.token_bytes(token, special=True).decode("utf-8", "replace")
            if text:
                self.special.setdefault(text, token)
        self.eog = vocab.eos_id if vocab.eos_id in vocab.eog_ids else min(vocab.eog_ids, default=vocab.eos_id)
        self.text_pieces = [
            vocab.token_bytes(t, special=True) if t in vocab.control_ids else p for t, p in enumerate(vocab.pieces)
        ]

    def lookup(self, key: str) -> int | None:
        if key.startswith("token_id:"):
            try:
                return int(key[9:])
            except ValueError:
                return None
        if key == "":
            return self.eog
        for table in (self.exact, self.special, self.loose):
            if key in table:
                return table[key]
        return None


_indexes: dict[str, KeyIndex] = {}
_index_lock = threading.Lock()


def key_index(vocab: VocabSource) -> KeyIndex:
    with _index_lock:
        if vocab.cache_key not in _indexes:
            _indexes[vocab.cache_key] = KeyIndex(vocab)
        return _indexes[vocab.cache_key]


@dataclass
class TopK:
    """One row as a server reported it: known log-probabilities by token id."""

    known: dict[int, float]
    ambiguous_at: int | None = None  # rank of a "" key whose value later "" tokens may have overwritten


class RemoteModel:
    """A model on a server; the vocabulary side from a local VocabSource. One caller at a time."""

    def __init__(self, spec: RemoteSpec, vocab: VocabSource, client: RemoteClient | None = None):
        self.spec, self.vocab = spec, vocab
        self.client = client or RemoteClient(spec)
        self.path: Path = vocab.path
        self.n_vocab = vocab.n_vocab
        self.pieces = vocab.pieces
        self.eog_ids, self.control_ids = vocab.eog_ids, vocab.control_ids
        self.bos_id, self.eos_id, self.adds_bos = vocab.bos_id, vocab.eos_id, vocab.adds_bos
        self.n_ctx = spec.n_ctx
        self.keys = key_index(vocab)
        self.model = spec.model or self._first_model()
        self.name = self.model
        self._rows: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.requests = 0  # completions requests sent
        self.request_seconds = 0.0

    # -- vocabulary (local) -----------------------------------------------------------------

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return self.vocab.tokenize(text, add_bos=add_bos, special=special)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        return self.vocab.token_bytes(token, special=special)

    def metadata(self, key: str) -> str | None:
        return self.vocab.metadata(key)

    def identity(self) -> dict:
        """What an evaluation run records about this model (not the URL: a server may move)."""
        return {
            "server_model": self.model,
            "vocab": {"file": self.path.name, "size": self.path.stat().st_size},
            "top_k": self.spec.top_k,
            "prompt_format": self.spec.prompt_format,
        }

    # -- evaluation (remote) ----------------------------------------------------------------

    def begin_request(self, prompt: Sequence[int]) -> None:
        """Nothing to prepare: the server caches prompt prefixes itself."""

    def logits(self, tokens: Sequence[int], n_last: int = 1) -> np.ndarray:
        n = len(tokens)
        if n == 0:
            raise ValueError("cannot evaluate an empty token sequence")
        if n > self.n_ctx:
            raise ContextFull(n, self.n_ctx)
        return np.stack([self._row(tuple(tokens[: p + 1])) for p in range(n - n_last, n)])

    def _row(self, prefix: tuple[int, ...]) -> np.ndarray:
        row = self._rows.get(prefix)
        if row is None:
            row = self._build_row(self._top_k(prefix))
            self._rows[prefix] = row
            while len(self._rows) > _KEPT_ROWS:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(prefix)
        return row

    def _build_row(self, top: TopK) -> np.ndarray:
        ids = np.fromiter(top.known.keys(), dtype=np.int64, count=len(top.known))
        lps = np.fromiter(top.known.values(), dtype=np.float64, count=len(top.known))
        unknown = max(0.0, 1.0 - float(np.exp(lps).sum()))
        others = self.n_vocab - len(ids)
        floor = math.log(unknown / others) if unknown > 0.0 and others > 0 else -np.inf
        row = np.full(self.n_vocab, floor, dtype=np.float32)
        row[ids] = lps
        return row

    def _top_k(self, prefix: tuple[int, ...]) -> TopK:
        prompt = self._prompt(prefix)
        top, stopped = self._ask(prompt, self.spec.top_k, bias_eog=False, n_tokens=len(prefix))
        if top is None and stopped:
            # The server stopped at an end-of-generation token without reporting it: ask again
            # with those tokens kept from sampling (the reported log-probabilities are raw).
            top, _ = self._ask(prompt, self.spec.top_k, bias_eog=True)
            eog_first = True
        else:
            eog_first = False
        if top is None:
            raise BlendinError(
                f"{self.spec.api}/completions: the answer has no log-probabilities. The server must return them:"
                " llama-cpp-python's server needs --logits_all true, vLLM needs --max-logprobs at least"
                f" {self.spec.top_k} (or lower --logprobs)"
            )
        if top.ambiguous_at is not None:
            # A "" key (end of generation, for llama-cpp-python) first met at rank r: asking for
            # exactly r + 1 log-probabilities makes its value that of rank r.
            again, _ = self._ask(prompt, top.ambiguous_at + 1, bias_eog=eog_first)
            if again is not None and self.keys.eog in again.known:
                top.known[self.keys.eog] = again.known[self.keys.eog]
        return top

    def _prompt(self, prefix: tuple[int, ...]):
        if self.spec.prompt_format == "tokens":
            return list(prefix)
        ids = prefix[1:] if self.adds_bos and prefix and prefix[0] == self.bos_id else prefix
        data = b"".join(self.keys.text_pieces[t] for t in ids)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise UnrepresentablePrompt(self.name, len(prefix)) from None

    def _ask(self, prompt, k: int, bias_eog: bool, n_tokens: int = 0) -> tuple[TopK | None, bool]:
        """(the reported top-k, or None; whether the server stopped at an end token)."""
        payload = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": k,
            "stream": False,
            "cache_prompt": True,
            "seed": 0,
        }
        if bias_eog:
            payload["logit_bias"] = {str(t): _EOG_BIAS for t in sorted(self.eog_ids)}
        started = time.perf_counter()
        try:
            data = self.client.request("POST", "/completions", payload)
        except ServerError as e:
            if e.status == 400 and any(w in e.message.lower() for w in ("context", "exceed", "too long", "maximum")):
                raise ContextFull(n_tokens, self.n_ctx) from None
            raise
        finally:
            self.requests += 1
            self.request_seconds += time.perf_counter() - started
        return self._parse(data)

    def _parse(self, data) -> tuple[TopK | None, bool]:
        url = self.spec.api + "/completions"
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            choice = None
        if not isinstance(choice, dict):
            raise BlendinError(f"{url}: not a completions answer (no choices): {_excerpt(json.dumps(data))}")
        stopped = choice.get("finish_reason") == "stop"
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict):
            return None, stopped
        known: dict[int, float] = {}
        ambiguous_at = None
        try:
            if "content" in logprobs:  # llama-server: entries with ids
                entries = logprobs["content"] or []
                if not entries:
                    return None, stopped
                for entry in entries[0].get("top_logprobs") or []:
                    token = entry.get("id")
                    if not isinstance(token, int):
                        raw = entry.get("bytes")
                        token = self.keys.by_bytes.get(bytes(raw)) if isinstance(raw, list) else None
                        if token is None:
                            token = self.keys.lookup(entry.get("token", ""))
                    if token is not None and 0 <= token < self.n_vocab:
                        known.setdefault(token, float(entry["logprob"]))
            else:  # the OpenAI legacy form: {decoded token: logprob} (vLLM, llama-cpp-python)
                tops = logprobs.get("top_logprobs") or []
                if not tops or not isinstance(tops[0], dict):
                    return None, stopped
                keys = list(tops[0].items())
                for rank, (key, value) in enumerate(keys):
                    token = self.keys.lookup(key)
                    if token is None or not 0 <= token < self.n_vocab or value is None:
                        continue
                    if key == "" and rank < len(keys) - 1:
                        ambiguous_at = rank
                    known.setdefault(token, float(value))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BlendinError(
                f"{url}: unexpected log-probabilities in the answer: {_excerpt(json.dumps(logprobs))}"
            ) from None
        if not known:
            return None, stopped
        return TopK(known, ambiguous_at), stopped

    def _first_model(self) -> str:
        data = self.client.request("GET", "/models")
        try:
            return str(data["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise BlendinError(f"{self.spec.api}/models: no model listed; pass the model name") from None

    def close(self) -> None:
        self.client.close()


# -- the command line's remote options --------------------------------------------------------


@dataclass(frozen=True)
class RemoteSettings:
    """The command line's remote options for both models."""

    base_url: str | None = None
    base_model: str | None = None
    base_vocab: str | None = None
    base_prompt_format: str = "text"
    guide_url: str | None = None
    guide_model: str | None = None
    guide_vocab: str | None = None
    guide_prompt_format: str = "text"
    top_k: int = 20
    timeout: float = 60.0
    retries: int = 3

    @property
    def used(self) -> bool:
        return bool(self.base_url or self.guide_url)

    def server(self, role: str, n_ctx: int) -> RemoteSpec | None:
        """Where the base or the guide (`role`) is served; None when it runs here."""
        if role == "base":
            url, model, vocab, prompt_format = self.base_url, self.base_model, self.base_vocab, self.base_prompt_format
        else:
            url, model, vocab, prompt_format = (
                self.guide_url,
                self.guide_model,
                self.guide_vocab,
                self.guide_prompt_format,
            )
        if not url:
            if model or vocab:
                raise BlendinError(
                    "--base-model/--base-vocab and --guide-model/--guide-vocab go with --base-url/--guide-url"
                )
            return None
        return RemoteSpec(
            url=url,
            model=model,
            top_k=self.top_k,
            prompt_format=prompt_format,
            timeout=self.timeout,
            retries=self.retries,
            n_ctx=n_ctx,
        )
