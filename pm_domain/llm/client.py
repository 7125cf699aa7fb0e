"""The Ollama client the LLM stages use: structured output, retries, cache, real telemetry.

Built on the official `ollama` client. One `LLMClient` serves one run: it probes each server once
(GET /api/tags, which also gives each model's digest for the cache key), then answers requests,
up to `parallel_per_host` at a time on each server. Every request ends in an `LLMCall` that says
where the answer came from:

- `ollama`: a fresh reply that validated against the task's schema;
- `cache`: a validated reply stored earlier for the same prompt, model digest and options;
- `fallback`: no valid reply (mode, unreachable server, timeout, HTTP error, invalid JSON); the
  caller writes its rule-based answer and the row carries `outcome` and `error` saying why;
- `skipped`: not asked, because the answer could not matter (the caller says why).

Every reply the server gives is cached, valid or not: the options (temperature 0, a fixed seed)
make it deterministic, so asking the same prompt again would return the same bytes. An unchanged
re-run makes no call; `retry_invalid` asks again for the replies that did not validate.

Several servers (`OLLAMA_HOST` as a comma-separated list) share the work: a request goes to a
server that has its model and a free slot, the fastest measured first; a server that stops
answering (refused, reset, or timeouts in a row) is dropped for the rest of the run and its
requests go to the others. A model served by several hosts must have the same digest on each
(the cache key holds it): a host with another build of a model does not serve it. Replies are
deterministic, so which server answered changes nothing but the `host` column.

Each task has an ordered list of models (routing): the first that a server has and that is not
slow answers. A model is slow when the median latency of its replies in this run (at least
`ROUTING_MIN_CALLS` of them) exceeds `max_latency_seconds`, or when it was given as slow (the
health probe's last verdict); when every model is slow the fastest measured one answers. Each row
records the model that answered and, when it was not the first, why.

Latency and throughput come from Ollama's own counters (`total_duration`, `eval_count`,
`eval_duration`, `prompt_eval_count`, `prompt_eval_duration`, `load_duration`), never from words
divided by wall time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import httpx
import ollama
from pydantic import BaseModel

from pm_domain.llm.cutoffs import KnowledgeCutoff, knowledge_cutoff
from pm_domain.llm.parsing import parse_reply
from pm_domain.llm.prompts import Prompt, should_anonymize
from pm_domain.llm.schemas import max_reply_tokens
from pm_domain.settings import LLM_ANONYMIZE_POLICIES

Mode = Literal["auto", "ollama", "fallback"]
MODES = ("auto", "ollama", "fallback")
TASKS = ("analysis", "signal", "risk")
ROUTING_MIN_CALLS = 3  # one slow reply (a model load) does not route a model away


class OllamaUnavailableError(RuntimeError):
    """mode=ollama and the server (or the model) cannot be used: the run fails before writing."""


@dataclass(frozen=True)
class OllamaSettings:
    host: str  # one base URL, or several separated by commas
    models: Mapping[str, Sequence[str] | str]  # task -> model names in order of preference
    mode: Mode = "auto"
    timeout_seconds: float = 120.0
    retries: int = 2  # further attempts after the first, on connection errors and HTTP 5xx only
    backoff_seconds: float = 1.0  # doubled after every failed attempt
    keep_alive: str = "10m"
    seed: int = 42
    probe_timeout_seconds: float = 3.0
    # Routing: a model whose replies this run take longer than this (median) is passed over.
    max_latency_seconds: float = 5.0
    retry_invalid: bool = False  # ask again for cached replies that did not validate
    # A server that times out this many times in a row is treated as down for the rest of the
    # run: otherwise a hung server costs the full timeout on every remaining row.
    max_consecutive_timeouts: int = 2
    # model name (or name without its tag) -> training cutoff; the rest from cutoffs.DOCUMENTED_CUTOFFS
    knowledge_cutoffs: Mapping[str, dt.date] = field(default_factory=dict)
    # Which prompts hide ticker, date and price level: auto | always | never (PM_LLM_ANONYMIZE)
    anonymize: str = "auto"
    # Requests in flight at once on each host (PM_LLM_PARALLEL_PER_HOST): what its OLLAMA_NUM_PARALLEL serves.
    parallel_per_host: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"LLM mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.anonymize not in LLM_ANONYMIZE_POLICIES:
            raise ValueError(f"anonymize {self.anonymize!r}: use one of {', '.join(LLM_ANONYMIZE_POLICIES)}")
        routes = {task: (names,) if isinstance(names, str) else tuple(names)
                  for task, names in self.models.items()}
        missing = [task for task in TASKS if not routes.get(task) or not all(routes[task])]
        if missing:
            raise ValueError(f"no Ollama model configured for task(s) {', '.join(missing)}")
        object.__setattr__(self, "models", routes)
        if not self.hosts:
            raise ValueError("no Ollama host configured")
        if self.parallel_per_host < 1:
            raise ValueError(f"parallel_per_host {self.parallel_per_host}: at least 1")

    @property
    def hosts(self) -> tuple[str, ...]:
        """Each server's base URL, in the order given."""
        return tuple(dict.fromkeys(h.strip() for h in self.host.split(",") if h.strip()))

    def cutoff(self, model: str) -> KnowledgeCutoff:
        return knowledge_cutoff(model, self.knowledge_cutoffs)

    def route(self, task: str) -> tuple[str, ...]:
        return self.models[task]  # type: ignore[return-value]  # normalised to tuples above

    def anonymizes(self, task: str, session: dt.date) -> bool:
        """Whether the task's prompt about `session` is anonymized. Under auto it is decided by
        the cutoff of the model the task asks first: routing may hand the prompt to a later
        model, but the text is fixed before any model answers (and is the cache key)."""
        return should_anonymize(self.anonymize, self.cutoff(self.route(task)[0]), session)

    def options(self, schema: type[BaseModel]) -> dict[str, object]:
        # temperature 0 and a fixed seed: the same prompt gives the same reply, which is what
        # makes the cache sound and a re-run reproducible. num_predict is the schema's longest
        # reply, so the cap can never cut a reply off.
        return {"temperature": 0.0, "seed": self.seed, "num_predict": max_reply_tokens(schema)}


@dataclass(frozen=True)
class CachedReply:
    cache_key: str
    model: str
    model_digest: str
    prompt_hash: str
    content: str
    total_duration_ns: int | None
    prompt_eval_count: int | None
    eval_count: int | None
    eval_duration_ns: int | None
    created_at: dt.datetime
    valid: bool | None = True  # None: written before invalid replies were cached (all valid)
    done_reason: str | None = None
    prompt_eval_duration_ns: int | None = None
    load_duration_ns: int | None = None


@dataclass
class LLMCall:
    """One request and how it ended; `value` is the validated reply or None (use the fallback)."""

    stage: str
    ticker: str
    date: dt.date
    model: str
    prompt: Prompt
    source: Literal["ollama", "cache", "fallback", "skipped"] = "fallback"
    # ok | invalid_reply | timeout | http_error | unreachable | model_missing | disabled | not_asked
    outcome: str = "disabled"
    value: BaseModel | None = None
    model_digest: str | None = None
    parse_method: str | None = None
    error: str | None = None
    attempts: int = 0
    total_duration_ns: int | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    eval_duration_ns: int | None = None
    prompt_eval_duration_ns: int | None = None
    load_duration_ns: int | None = None
    done_reason: str | None = None
    num_predict: int | None = None
    routed_from: str | None = None  # why the first model of the route did not answer
    wall_ms: float | None = None
    new_cache_entry: CachedReply | None = None
    knowledge_cutoff: dt.date | None = None  # of `model`, the one that answered; None: unknown
    host: str | None = None  # the server that gave the reply (the last one asked when none did)

    @property
    def after_cutoff(self) -> bool:
        """The session the reply is about falls after the answering model's training cutoff."""
        return self.knowledge_cutoff is not None and self.date > self.knowledge_cutoff

    @property
    def latency_ms(self) -> float | None:
        """Ollama's `total_duration` (load + prompt evaluation + generation), in milliseconds."""
        return None if self.total_duration_ns is None else self.total_duration_ns / 1e6

    @property
    def tokens_per_second(self) -> float | None:
        """Generated tokens per second of generation: eval_count / eval_duration."""
        if not self.eval_count or not self.eval_duration_ns:
            return None
        return self.eval_count / (self.eval_duration_ns / 1e9)

    @property
    def fresh(self) -> bool:
        """A request reached the server in this run (whatever its outcome)."""
        return self.attempts > 0


@dataclass(frozen=True)
class Availability:
    reachable: bool  # at least one server answered the probe
    digests: Mapping[str, str] = field(default_factory=dict)  # model name -> digest
    error: str | None = None  # why no server can be used
    notes: tuple[str, ...] = ()  # servers left out: unreachable, or another build of a model


@dataclass
class _Host:
    """One server of the run: its client, the models it serves, its busy slots and its health."""

    url: str
    client: ollama.Client
    digests: dict[str, str] = field(default_factory=dict)
    in_flight: int = 0
    down: str | None = None  # why it is not asked again this run
    timeouts_in_a_row: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, this run's replies

    def median_latency(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


def cache_key(prompt_hash: str, model: str, digest: str, options: Mapping[str, object],
              schema: type[BaseModel]) -> str:
    """sha256 over everything that decides the reply: prompt, model and its digest, options and
    the output schema. A re-pulled model (new digest) or an edited prompt misses the cache."""
    material = json.dumps({"prompt": prompt_hash, "model": model, "digest": digest,
                           "options": dict(options), "schema": schema.model_json_schema()},
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


class LLMClient:
    """Answers prompts for one run; `ask` may be called from several threads at once (up to
    `concurrency()`), each request holding one slot of one server while it is answered."""

    def __init__(self, settings: OllamaSettings, sleep: Callable[[float], None] = time.sleep,
                 slow_models: Iterable[str] = ()) -> None:
        self.settings = settings
        self._sleep = sleep
        self._hosts = [_Host(url, ollama.Client(host=url, timeout=settings.timeout_seconds))
                       for url in settings.hosts]
        self._availability: Availability | None = None
        self._state = threading.Condition()  # guards slots, health and latencies across threads
        self._latencies: dict[str, list[float]] = {}  # model -> seconds of this run's replies
        self._slow: dict[str, str] = {m: "slow at the last health probe" for m in slow_models}

    def concurrency(self) -> int:
        """How many requests may be in flight at once: every reachable server's slots."""
        if not self.availability().reachable:
            return 1
        return self.settings.parallel_per_host * sum(h.down is None for h in self._hosts)

    def _down(self) -> str | None:
        """Why no server is left this run (every one has stopped answering), else None."""
        with self._state:
            if all(h.down for h in self._hosts):
                return "; ".join(dict.fromkeys(h.down for h in self._hosts if h.down))
            return None

    def availability(self) -> Availability:
        """Probe the server once per client: reachable, and which models it has (with digests)."""
        if self._availability is None:
            self._availability = self._probe()
        return self._availability

    def _probe(self) -> Availability:
        if self.settings.mode == "fallback":
            return Availability(False, error="mode=fallback: Ollama is not called")
        with ThreadPoolExecutor(max_workers=len(self._hosts)) as pool:  # one probe timeout, however many hosts
            listings = list(pool.map(self._list_models, self._hosts))
        notes: list[str] = []
        digests: dict[str, str] = {}
        for host, listing in zip(self._hosts, listings, strict=True):
            if isinstance(listing, str):
                host.down = listing
                notes.append(listing)
                continue
            for model, digest in listing.items():
                if digests.setdefault(model, digest) == digest:
                    host.digests[model] = digest
                else:
                    notes.append(f"{host.url} has another build of {model} (digest {digest[:12]}, not "
                                 f"{digests[model][:12]}): not asked for it")
        if all(h.down for h in self._hosts):
            return Availability(False, error="; ".join(notes))
        return Availability(True, digests, notes=tuple(notes))

    def _list_models(self, host: _Host) -> dict[str, str] | str:
        """The server's models and their digests, or why it cannot be used."""
        try:
            listing = ollama.Client(host=host.url, timeout=self.settings.probe_timeout_seconds).list()
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError, ValueError) as exc:
            # ValueError covers a body that is not Ollama's JSON (another service at that address)
            return f"Ollama unreachable at {host.url}: {_describe(exc)}"
        return {m.model: m.digest or "" for m in listing.models if m.model}

    def require_available(self) -> None:
        """mode=ollama: raise OllamaUnavailableError unless the server is there with at least one
        model of every task's route."""
        if self.settings.mode != "ollama":
            return
        availability = self.availability()
        if not availability.reachable:
            raise OllamaUnavailableError(f"{availability.error} (mode=ollama; use mode=auto to "
                                         "write labelled fallback rows instead)")
        for task in TASKS:
            route = self.settings.route(task)
            if not any(m in availability.digests for m in route):
                raise OllamaUnavailableError(
                    f"no model for {task} on {self.settings.host} ({', '.join(route)}): run `ollama pull "
                    f"{route[0]}` there, or configure another model")

    def missing_models(self) -> list[str]:
        """Configured models the server does not have (routing skips them)."""
        digests = self.availability().digests
        return sorted({m for task in TASKS for m in self.settings.route(task) if m not in digests})

    def cache_keys_for(self, stage: str, prompt: Prompt, schema: type[BaseModel]) -> list[str]:
        """The keys a reply to this prompt may be cached under, one per model of the route the
        server has (a reply any of them gave earlier is reused)."""
        digests = self.availability().digests
        return [cache_key(prompt.prompt_hash, model, digests[model], self.settings.options(schema), schema)
                for model in self.settings.route(stage) if model in digests]

    def skip(self, stage: str, ticker: str, date: dt.date, prompt: Prompt, reason: str) -> LLMCall:
        """A row the LLM is not asked for, because its answer could not change anything."""
        model = self.settings.route(stage)[0]
        return LLMCall(stage, ticker, date, model, prompt, source="skipped", outcome="not_asked", error=reason,
                       knowledge_cutoff=self.settings.cutoff(model).cutoff)

    def ask(self, stage: str, ticker: str, date: dt.date, prompt: Prompt,
            schema: type[BaseModel], cache: Mapping[str, CachedReply]) -> LLMCall:
        """The reply (cached, fresh or none), stamped with the answering model's cutoff."""
        call = self._ask(stage, ticker, date, prompt, schema, cache)
        call.knowledge_cutoff = self.settings.cutoff(call.model).cutoff
        return call

    def _ask(self, stage: str, ticker: str, date: dt.date, prompt: Prompt,
             schema: type[BaseModel], cache: Mapping[str, CachedReply]) -> LLMCall:
        call = LLMCall(stage, ticker, date, self.settings.route(stage)[0], prompt)
        if self.settings.mode == "fallback":
            call.error = "mode=fallback: Ollama is not called"
            return call
        self.require_available()
        availability = self.availability()
        down = self._down() if availability.reachable else availability.error
        if down:
            call.outcome, call.error = "unreachable", down
            return call
        available = [m for m in self.settings.route(stage) if m in availability.digests]
        if not available:
            call.outcome = "model_missing"
            call.error = f"model {call.model} not on {self.settings.host} (ollama pull {call.model})"
            return call
        options = self.settings.options(schema)
        cached = {model: cache.get(cache_key(prompt.prompt_hash, model, availability.digests[model], options, schema))
                  for model in available}
        # A valid reply from any model of the route first; an invalid one only when none is valid
        # and invalid replies are not to be asked again.
        usable = [m for m, e in cached.items() if e is not None and e.valid is not False]
        if not usable and not self.settings.retry_invalid:
            usable = [m for m, e in cached.items() if e is not None]
        if usable:
            call.model, call.model_digest = usable[0], availability.digests[usable[0]]
            return self._from_cache(call, cached[usable[0]], schema)
        call.model, call.routed_from = self._choose(available)
        call.model_digest = availability.digests[call.model]
        if call.model != self.settings.route(stage)[0] and call.routed_from is None:
            call.routed_from = f"{self.settings.route(stage)[0]} is not on {self.settings.host}"
        key = cache_key(prompt.prompt_hash, call.model, call.model_digest, options, schema)
        return self._from_ollama(call, key, schema, options)

    def _choose(self, available: list[str]) -> tuple[str, str | None]:
        """The first model not known to be slow; when all are, the fastest measured."""
        for model in available:
            if model not in self._slow:
                skipped = [f"{m}: {self._slow[m]}" for m in available[:available.index(model)]]
                return model, "; ".join(skipped) or None
        fastest = min(available, key=lambda m: statistics.median(self._latencies.get(m) or [float("inf")]))
        return fastest, "every model of the route is slow (" + "; ".join(
            f"{m}: {self._slow[m]}" for m in available) + f"): the fastest measured, {fastest}, answers"

    def _note_latency(self, host: _Host, model: str, latency_ms: float | None) -> None:
        if latency_ms is None:
            return
        with self._state:
            host.latencies.append(latency_ms / 1e3)
            seconds = self._latencies.setdefault(model, [])
            seconds.append(latency_ms / 1e3)
            median = statistics.median(seconds)
            if len(seconds) >= ROUTING_MIN_CALLS and median > self.settings.max_latency_seconds:
                self._slow[model] = (f"median latency {median:.1f} s over {len(seconds)} calls this run, "
                                     f"over {self.settings.max_latency_seconds:g} s")

    def _from_cache(self, call: LLMCall, entry: CachedReply, schema: type[BaseModel]) -> LLMCall:
        parsed = parse_reply(entry.content, schema)
        if parsed.value is None:
            call.outcome = "invalid_reply"
            call.error = (f"cached reply (the same prompt, model and options) is invalid: {parsed.error}"
                          f"{' (generation stopped at the token cap)' if entry.done_reason == 'length' else ''}; "
                          "set retry_invalid to ask again")[:500]
            return call
        # No call was made, so the row has no latency or tokens of its own; the cache table keeps
        # the counters of the call that produced the reply.
        call.source, call.outcome, call.value, call.parse_method = "cache", "ok", parsed.value, parsed.method
        return call

    def _from_ollama(self, call: LLMCall, key: str, schema: type[BaseModel], options: dict) -> LLMCall:
        call.num_predict = int(options["num_predict"])  # type: ignore[call-overload]
        began = time.perf_counter()
        response = self._chat_on_a_host(call, schema, options)
        call.wall_ms = (time.perf_counter() - began) * 1e3
        if response is None:
            return call
        content = response.message.content or ""
        call.total_duration_ns, call.prompt_eval_count = response.total_duration, response.prompt_eval_count
        call.eval_count, call.eval_duration_ns = response.eval_count, response.eval_duration
        call.prompt_eval_duration_ns, call.load_duration_ns = response.prompt_eval_duration, response.load_duration
        call.done_reason = response.done_reason
        parsed = parse_reply(content, schema)
        call.new_cache_entry = CachedReply(
            key, call.model, call.model_digest or "", call.prompt.prompt_hash, content,
            call.total_duration_ns, call.prompt_eval_count, call.eval_count, call.eval_duration_ns,
            dt.datetime.now(dt.UTC).replace(tzinfo=None), parsed.value is not None, call.done_reason,
            call.prompt_eval_duration_ns, call.load_duration_ns,
        )
        if parsed.value is None:
            cut = " (generation stopped at the token cap)" if response.done_reason == "length" else ""
            call.outcome, call.error = "invalid_reply", f"{parsed.error}{cut}"
            return call
        call.source, call.outcome, call.value, call.parse_method = "ollama", "ok", parsed.value, parsed.method
        return call

    def _chat_on_a_host(self, call: LLMCall, schema: type[BaseModel], options: dict) -> ollama.ChatResponse | None:
        """The reply from a server that has the model, moving to the next when one stops answering."""
        tried: set[str] = set()
        while (host := self._take_slot(call.model, tried)) is not None:
            call.host = host.url
            try:
                response = self._chat_with_retries(host, call, schema, options)
            finally:
                self._free_slot(host)
            if response is not None:
                self._note_latency(host, call.model, response.total_duration / 1e6 if response.total_duration else None)
                return response
            if call.outcome == "timeout":  # at least as slow as the timeout, for routing
                self._note_latency(host, call.model, self.settings.timeout_seconds * 1e3)
            if call.outcome != "unreachable":
                return None
            tried.add(host.url)  # that server is down for this run: the request goes to another
        down = self._down()
        if call.host is None or down:
            call.outcome = "unreachable"
            call.error = down or call.error or f"no server left with {call.model}"
        if down and self.settings.mode == "ollama":
            raise OllamaUnavailableError(f"{down} after {call.attempts} attempt(s) (mode=ollama)")
        return None

    def _take_slot(self, model: str, tried: set[str]) -> _Host | None:
        """A free slot on a live server with the model (the fastest measured first), waiting for
        one when all are busy; None when no such server is left."""
        with self._state:
            while True:
                live = [h for h in self._hosts if h.down is None and h.url not in tried and model in h.digests]
                if not live:
                    return None
                free = [h for h in live if h.in_flight < self.settings.parallel_per_host]
                if free:
                    host = min(free, key=lambda h: (h.median_latency(), h.in_flight))
                    host.in_flight += 1
                    return host
                self._state.wait(timeout=1.0)  # re-checked: a busy server may go down meanwhile

    def _free_slot(self, host: _Host) -> None:
        with self._state:
            host.in_flight -= 1
            self._state.notify_all()

    def _mark_down(self, host: _Host, why: str) -> None:
        with self._state:
            host.down = host.down or why
            self._state.notify_all()

    def _chat_with_retries(self, host: _Host, call: LLMCall, schema: type[BaseModel],
                           options: dict) -> ollama.ChatResponse | None:
        delay = self.settings.backoff_seconds
        for attempt in range(1, self.settings.retries + 2):
            call.attempts += 1
            try:
                response = host.client.chat(
                    model=call.model,
                    messages=[{"role": "system", "content": call.prompt.system},
                              {"role": "user", "content": call.prompt.user}],
                    format=schema.model_json_schema(),
                    options=options,
                    keep_alive=self.settings.keep_alive,
                    stream=False,
                )
                host.timeouts_in_a_row = 0
                return response
            except (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                    httpx.ReadError, httpx.WriteError) as exc:
                # refused, reset or closed before a response: the server (or the path to it) failed
                call.outcome, call.error = "unreachable", _describe(exc)
                retry = True
            except ollama.ResponseError as exc:
                call.outcome, call.error = "http_error", f"HTTP {exc.status_code}: {exc.error}"[:300]
                retry = exc.status_code >= 500
            except httpx.TimeoutException as exc:
                # A reply slower than the timeout: asking again would only double the wait.
                call.outcome = "timeout"
                call.error = f"no reply within {self.settings.timeout_seconds:g} s ({type(exc).__name__})"
                self._note_timeout(host)
                return None
            except (ValueError, httpx.HTTPError) as exc:
                # A 200 whose body is not Ollama's JSON (ValueError, pydantic's ValidationError),
                # or any other transport failure: no reply to use, and no reason to think a retry helps.
                call.outcome, call.error = "invalid_reply", f"not an Ollama response: {_describe(exc)}"
                return None
            if not retry or attempt > self.settings.retries:
                break
            self._sleep(delay)
            delay *= 2
        if call.outcome == "unreachable":
            self._mark_down(host, f"Ollama stopped answering at {host.url}: {call.error}")
        return None

    def _note_timeout(self, host: _Host) -> None:
        with self._state:
            host.timeouts_in_a_row += 1
            if host.timeouts_in_a_row < self.settings.max_consecutive_timeouts:
                return
        self._mark_down(host, f"Ollama at {host.url} timed out {host.timeouts_in_a_row} times in a row "
                              f"(timeout {self.settings.timeout_seconds:g} s): not asked again this run")
        down = self._down()
        if down and self.settings.mode == "ollama":
            raise OllamaUnavailableError(f"{down} (mode=ollama)")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
