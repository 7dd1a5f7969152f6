"""The server under bad input, faults and hostile clients: one request never hurts another, text
that is not valid Unicode and out-of-range values are 400s naming the field, and a keyless server
answers only loopback Host names and closes half-sent requests."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchlm.checkpoint import Checkpoint
from scratchlm.inference import batch as batch_module
from scratchlm.inference import engine as engine_module
from scratchlm.inference.settings import SamplingSettings
from tests.server.conftest import RunningServer, StartServer, metric_value
from tests.server.test_api import reference
from tests.server.test_errors import assert_error_shape

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


def post_raw(server: RunningServer, path: str, raw: str) -> httpx.Response:
    """POST a JSON text as is (json.dumps writes a lone surrogate as the escape "\\ud800")."""
    return httpx.post(
        server.url + path,
        content=raw.encode(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


# --- invalid Unicode -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (COMPLETIONS, {"prompt": "Tom \ud800 ran"}, "prompt"),
        (CHAT, {"messages": [{"role": "user", "content": "hi \udc00"}]}, "messages.0.content"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages.0.content.0.text",
        ),
        (CHAT, {"messages": [{"role": "us\ud800er", "content": "hi"}]}, "messages.0.role"),
        (COMPLETIONS, {"prompt": "Tom", "stop": ["a", "\ud800"]}, "stop.1"),
        (COMPLETIONS, {"prompt": "Tom", "model": "\ud800"}, "model"),
        (COMPLETIONS, {"prompt": "Tom", "user": "\udbff"}, "user"),
        (COMPLETIONS, {"prompt": "Tom", "metadata": {"note": ["ok", "\ud800"]}}, "metadata.note.1"),
        (COMPLETIONS, {"prompt": "Tom", "metadata": {"\ud800": 1}}, "metadata"),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(
    server: RunningServer, path: str, body: dict[str, Any], param: str
) -> None:
    body.setdefault("max_tokens", 2)
    error = assert_error_shape(post_raw(server, path, json.dumps(body)), 400)
    assert error["param"] == param and error["code"] == "invalid_unicode"
    assert f"{param} is not valid Unicode" in error["message"]


def test_surrogate_bytes_and_invalid_utf8_are_400(server: RunningServer) -> None:
    # The UTF-8-style bytes of a surrogate (json.loads reads them with surrogatepass).
    raw = '{"prompt": "a\ud800", "max_tokens": 2}'.encode("utf-8", "surrogatepass")
    response = httpx.post(
        server.url + COMPLETIONS, content=raw, headers={"Content-Type": "application/json"}
    )
    assert assert_error_shape(response, 400)["param"] == "prompt"
    response = httpx.post(
        server.url + COMPLETIONS,
        content=b'{"prompt": "a\xff", "max_tokens": 2}',
        headers={"Content-Type": "application/json"},
    )
    assert "UTF-8" in assert_error_shape(response, 400)["message"]


def test_valid_surrogate_pairs_are_text(server: RunningServer) -> None:
    response = post_raw(server, COMPLETIONS, json.dumps({"prompt": "Tom 😀", "max_tokens": 2}))
    assert response.status_code == 200, response.text


# --- ranges, logit_bias, fields that would change the answer -------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        (COMPLETIONS, '{"prompt": "Tom", "seed": 18446744073709551616}', "seed"),
        (COMPLETIONS, '{"prompt": "Tom", "seed": 9223372036854775808}', "seed"),
        (COMPLETIONS, '{"prompt": "Tom", "seed": -9223372036854775809}', "seed"),
        (COMPLETIONS, '{"prompt": "Tom", "temperature": NaN}', "temperature"),
        (COMPLETIONS, '{"prompt": "Tom", "top_p": Infinity}', "top_p"),
        (COMPLETIONS, '{"prompt": "Tom", "repetition_penalty": Infinity}', "repetition_penalty"),
        (COMPLETIONS, '{"prompt": "Tom", "frequency_penalty": -2.5}', "frequency_penalty"),
        (COMPLETIONS, '{"prompt": "Tom", "temperature": 2.01}', "temperature"),
        (COMPLETIONS, '{"prompt": "Tom", "max_tokens": 1e400}', "max_tokens"),
        (COMPLETIONS, '{"prompt": "Tom", "n": 65}', "n"),
        (COMPLETIONS, '{"prompt": "Tom", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
        (COMPLETIONS, '{"prompt": "Tom", "stop": ""}', "stop"),
        (COMPLETIONS, '{"prompt": "Tom", "stop": ["a", ""]}', "stop"),
        (COMPLETIONS, '{"prompt": "Tom", "logit_bias": {"5": 100.5}}', "logit_bias"),
        (COMPLETIONS, '{"prompt": "Tom", "logit_bias": {"-1": 1}}', "logit_bias"),
        (COMPLETIONS, '{"prompt": "Tom", "logit_bias": {"tom": 1}}', "logit_bias"),
        (COMPLETIONS, '{"prompt": "Tom", "logit_bias": {"99999": 1}}', "logit_bias"),
        (COMPLETIONS, '{"prompt": "Tom", "logit_bias": {"5": NaN}}', "logit_bias"),
        (COMPLETIONS, '{"prompt": "Tom", "logprobs": 6}', "logprobs"),
        (COMPLETIONS, '{"prompt": "Tom", "logprobs": -1}', "logprobs"),
        (COMPLETIONS, '{"prompt": "Tom", "logprobs": true}', "logprobs"),
        (COMPLETIONS, '{"prompt": "Tom", "echo": "yes"}', "echo"),
        (COMPLETIONS, '{"prompt": "Tom", "max_tokens": 0}', "max_tokens"),
        (COMPLETIONS, '{"prompt": "Tom", "best_of": 3}', "best_of"),
        (COMPLETIONS, '{"prompt": "Tom", "suffix": "The end."}', "suffix"),
        (CHAT, '{"messages": [{"role": "user", "content": "hi"}], "logprobs": 1}', "logprobs"),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}',
            "top_logprobs",
        ),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, '
            '"top_logprobs": 21}',
            "top_logprobs",
        ),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, '
            '"top_logprobs": -1}',
            "top_logprobs",
        ),
        (CHAT, '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}',
            "tools",
        ),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}',
            "tool_choice",
        ),
        (CHAT, '{"messages": [{"role": "user", "content": "hi"}], "functions": [{}]}', "functions"),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "hi"}], '
            '"response_format": {"type": "json_object"}}',
            "response_format",
        ),
        (
            CHAT,
            '{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 100000}',
            "max_completion_tokens",
        ),
    ],
)
def test_out_of_range_and_unsupported_fields_are_400_naming_them(
    server: RunningServer, path: str, raw: str, param: str
) -> None:
    error = assert_error_shape(post_raw(server, path, raw), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param), error


def test_fields_that_ask_for_nothing_are_accepted(server: RunningServer) -> None:
    body = {
        "messages": USER,
        "max_tokens": 2,
        "logprobs": False,
        "tools": [],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "user": "u1",
        "metadata": {"a": "b"},
        "store": False,
        "parallel_tool_calls": True,
        "seed": 2**63 - 1,
        "n": 3,
        "stop": ["a", "b", "c", "d"],
    }
    response = httpx.post(server.url + CHAT, json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 3
    body = {"prompt": "Tom", "max_tokens": 2, "echo": False, "best_of": 1, "suffix": ""}
    body["seed"] = -(2**63)
    assert httpx.post(server.url + COMPLETIONS, json=body, timeout=30).status_code == 200


def test_logit_bias_follows_openai(server: RunningServer, loaded: Checkpoint) -> None:
    tokenizer = loaded.tokenizer
    prompt_ids = tokenizer.encode("Once upon a time, Tom")
    stop_ids = frozenset({tokenizer.eos_id})
    plain, _ = reference(loaded, prompt_ids, stop_ids, 6)
    favourite = tokenizer.encode(" ball")[-1]  # plain text, not a special token
    body: dict[str, Any] = {"prompt": prompt_ids, "max_tokens": 6, "temperature": 0}
    forced = httpx.post(
        server.url + COMPLETIONS, json={**body, "logit_bias": {str(favourite): 100}}, timeout=30
    ).json()
    assert forced["choices"][0]["text"] == tokenizer.decode([favourite] * 6)
    # -100 bans the token greedy decoding would choose first.
    first = reference_first_token(loaded, prompt_ids)
    banned = httpx.post(
        server.url + COMPLETIONS, json={**body, "logit_bias": {str(first): -100}}, timeout=30
    ).json()
    assert banned["choices"][0]["text"] != plain


def reference_first_token(loaded: Checkpoint, prompt_ids: list[int]) -> int:
    greedy = SamplingSettings(temperature=0.0, top_k=None)
    engine = engine_module.Engine(loaded.model)
    return next(iter(engine.generate(prompt_ids, max_new_tokens=1, sampling=greedy)))


# --- one row failing never ends the others ------------------------------------------------

# Accepted settings that fault injection recognises: sampling fails for rows that carry them.
POISON = {"temperature": 0.7, "presence_penalty": 1.25}


def stream_completion(url: str, body: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(text, finish reason, error message) of one streamed completion."""
    text, finish, error = "", None, None
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            if "error" in event:
                error = event["error"]["message"]
                continue
            for choice in event["choices"]:
                text += choice["text"]
                finish = choice["finish_reason"] or finish
    return text, finish, error


def test_a_failing_row_ends_alone_and_extreme_settings_hurt_nobody(
    make_server: StartServer, loaded: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch_module.sample_next_token

    def flaky(
        logits: torch.Tensor, sampling: SamplingSettings, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        if (sampling.temperature, sampling.presence_penalty) == tuple(POISON.values()):
            raise RuntimeError("injected sampling failure")
        return real(logits, sampling, *args, **kwargs)

    monkeypatch.setattr(batch_module, "sample_next_token", flaky)
    running = make_server(max_batch=8, step_delay=0.02)
    url = running.base_url + "/completions"
    tokenizer = loaded.tokenizer
    prompts = ["Tom ran", "Lily sat", "The ball"]
    expected = [
        reference(loaded, tokenizer.encode(prompt), frozenset({tokenizer.eos_id}), 30)[0]
        for prompt in prompts
    ]
    results: dict[str, list[dict[str, Any]]] = {}
    started = threading.Barrier(len(prompts) + 1)

    def good(prompt: str) -> None:
        body = {"prompt": prompt, "max_tokens": 30, "temperature": 0, "stream": True}
        events: list[dict[str, Any]] = []
        with httpx.stream("POST", url, json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    events.append(json.loads(line[len("data: ") :]))
                    if len(events) == 1:
                        started.wait()  # this row is in the batch: let the others join it
        results[prompt] = events

    threads = [threading.Thread(target=good, args=(prompt,)) for prompt in prompts]
    for thread in threads:
        thread.start()
    started.wait(timeout=60)  # every good stream is running: the next rows join their batch
    poisoned = stream_completion(url, {"prompt": "Tom", "max_tokens": 30, **POISON})
    extreme = stream_completion(
        url,
        {
            "prompt": "Tom",
            "max_tokens": 5,
            "temperature": 1e-300,
            "repetition_penalty": 1e-300,
            "top_p": 1e-300,
            "logit_bias": {"7": 100, "8": -100},
        },
    )
    for thread in threads:
        thread.join(timeout=60)
    assert poisoned[2] is not None and "injected sampling failure" in poisoned[2]
    assert extreme[2] is None and extreme[1] in ("stop", "length")
    # Every good stream is exactly what the prompt gives alone, with no error event.
    for prompt, full in zip(prompts, expected, strict=True):
        events = results[prompt]
        assert not any("error" in event for event in events), events
        assert "".join(choice["text"] for event in events for choice in event["choices"]) == full
        assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(running.url + "/health").json()["status"] == "ok"
    text = httpx.get(running.url + "/metrics").text
    assert metric_value(text, 'scratchlm_errors_total{code="500"}') == 1
    after = httpx.post(url, json={"prompt": "Tom", "max_tokens": 3}, timeout=30)
    assert after.status_code == 200


def test_gauges_return_to_idle(make_server: StartServer) -> None:
    running = make_server(max_batch=1, step_delay=0.01)
    url = running.base_url + "/completions"
    body = {"prompt": "Tom", "max_tokens": 8, "temperature": 0}
    threads = [
        threading.Thread(target=httpx.post, args=(url,), kwargs={"json": body, "timeout": 60})
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    text = httpx.get(running.url + "/metrics").text
    assert metric_value(text, "scratchlm_batch_size_max") == 1  # it was busy
    # Set before the last row's end is delivered: no waiting needed.
    assert metric_value(text, "scratchlm_batch_size") == 0
    assert metric_value(text, "scratchlm_queue_depth") == 0
    assert httpx.get(running.url + "/health").json()["batch_size"] == 0


# --- Host names, timeouts, limits, the schema --------------------------------------------


def status_for_host(running: RunningServer, host: str, path: str = "/health") -> int:
    return httpx.get(running.url + path, headers={"Host": host}).status_code


def test_keyless_server_answers_only_loopback_hosts(server: RunningServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    loopback = ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", "[::1]:80")
    for host in (*loopback, "127.0.0.2", "localhost."):
        assert status_for_host(server, host) == 200, host
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::2]"):
        response = httpx.get(server.url + "/v1/models", headers={"Host": host})
        error = assert_error_shape(response, 403)
        assert error["code"] == "host_not_allowed" and "--allowed-host" in error["message"]
    response = httpx.post(
        server.url + COMPLETIONS,
        json={"prompt": "Tom", "max_tokens": 2},
        headers={"Host": "evil.example"},
    )
    assert_error_shape(response, 403)


def test_host_allow_list_and_key(make_server: StartServer) -> None:
    keyed = make_server(api_key="k")
    assert status_for_host(keyed, "evil.example") == 200  # the key protects the routes
    listed = make_server(api_key="k", allowed_hosts=["api.example"])
    assert status_for_host(listed, "api.example:443") == 200
    assert status_for_host(listed, "localhost") == 200
    assert status_for_host(listed, "evil.example") == 403
    anyone = make_server(allowed_hosts=["*"])
    assert status_for_host(anyone, "evil.example") == 200


def test_no_public_schema(make_server: StartServer, server: RunningServer) -> None:
    keyed = make_server(api_key="k")
    for running, headers in ((server, {}), (keyed, {"Authorization": "Bearer k"})):
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert httpx.get(running.url + path, headers=headers).status_code == 404


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(30)  # far beyond the test server's timeouts: a hang fails the test
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture
def raw_socket() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def connect(running: RunningServer, opened: list[socket.socket]) -> socket.socket:
    host, port = running.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    opened.append(sock)
    return sock


def test_half_sent_requests_are_closed(
    make_server: StartServer, raw_socket: list[socket.socket]
) -> None:
    # Keep-alive far longer than the header timeout: only the header timeout can close.
    running = make_server(header_timeout=0.5, body_timeout=0.5, keep_alive_timeout=60)
    # Half a request line and headers, then silence.
    sock = connect(running, raw_socket)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    # Nothing at all.
    assert read_until_closed(connect(running, raw_socket)).startswith(b"HTTP/1.1 408 ")
    # The headers, then a tenth of the body.
    sock = connect(running, raw_socket)
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"prompt":'
    )
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in reply
    # A complete request on a kept-alive connection, then half of the next one: sent later, or
    # right behind it (pipelined).
    sock = connect(running, raw_socket)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.settimeout(30)
    first = b""
    while not first.endswith(b"}"):  # the end of the JSON body
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ")
    sock.sendall(b"GET /health HTTP/1.1\r\n")
    assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    sock = connect(running, raw_socket)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\n")
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in reply
    assert httpx.get(running.url + "/health").status_code == 200


def test_connection_limit(make_server: StartServer, raw_socket: list[socket.socket]) -> None:
    running = make_server(max_connections=3)
    for _ in range(3):
        connect(running, raw_socket)  # idle connections hold their places
    assert httpx.get(running.url + "/health").status_code == 503


# --- fuzz: any body gets a 200 or a 4xx in the OpenAI error shape, never a 500 -------------

SURROGATE_TEXT = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udbff", "ok"])
WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN/Infinity
    st.sampled_from([5e-324, 1e-300, 1e300, 1.7e308, -0.0]),
    st.text(max_size=6),
    SURROGATE_TEXT,
    st.lists(st.integers(-3, 400), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-2, 2), max_size=2),
)
VALID = {
    "max_tokens": st.integers(1, 3),
    "temperature": st.one_of(st.floats(0, 2), st.sampled_from([0.0, 5e-324, 1e-300, 2.0])),
    "top_p": st.one_of(st.floats(5e-324, 1), st.sampled_from([5e-324, 1e-300, 1.0])),
    "top_k": st.integers(1, 10**20),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.one_of(
        st.floats(5e-324, 1.7e308), st.sampled_from([5e-324, 1e-300, 1e300, 1.7e308])
    ),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "n": st.integers(1, 2),
    "stop": st.one_of(
        st.text(min_size=1, max_size=3), st.lists(st.text(min_size=1, max_size=3), max_size=4)
    ),
    "logit_bias": st.dictionaries(st.integers(0, 300).map(str), st.floats(-100, 100), max_size=3),
    "stream": st.booleans(),
    "user": st.text(max_size=4),
    "logprobs": st.sampled_from([None, False, True, 0, 3]),
    "top_logprobs": st.sampled_from([None, 0, 3, 20]),
    "echo": st.sampled_from([None, False, True]),
    "best_of": st.sampled_from([None, 1, 2]),
    "response_format": st.sampled_from([None, {"type": "text"}, {"type": "json_object"}]),
    "tools": st.sampled_from([None, [], [{"type": "function"}]]),
    "stream_options": st.sampled_from([None, {"include_usage": True}, {"include_usage": "x"}]),
}
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user"] * 4 + ["assistant", "developer", "system", "robot"]),
            "content": st.one_of(
                st.none(),
                st.text(max_size=8),
                st.text(max_size=8),
                SURROGATE_TEXT,
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "type": st.sampled_from(["text", "image_url"]),
                            "text": st.text(max_size=4),
                        }
                    ),
                    max_size=2,
                ),
            ),
        }
    ),
    min_size=1,
    max_size=3,
)
PROMPT = st.one_of(
    st.text(max_size=12),
    st.text(max_size=12),
    st.lists(st.integers(0, 300), min_size=1, max_size=5),
    SURROGATE_TEXT,
    st.lists(st.integers(-2, 500), max_size=5),
    st.lists(st.text(max_size=6), max_size=3),  # several prompts
    st.lists(st.lists(st.integers(0, 300), max_size=3), max_size=3),
)


@st.composite
def request_bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    chat = draw(st.booleans())
    body: dict[str, Any] = {"messages": draw(MESSAGES)} if chat else {"prompt": draw(PROMPT)}
    body["max_tokens"] = draw(VALID["max_tokens"])  # replies stay short unless it goes wild
    body["stream"] = draw(st.booleans())
    wild = draw(st.booleans())  # half of the bodies hold only well-typed values
    for name in draw(st.sets(st.sampled_from(sorted(VALID)), max_size=6)):
        strategy = st.one_of(VALID[name], WILD) if wild else VALID[name]
        body[name] = draw(strategy)
    if wild and draw(st.booleans()):
        body[draw(st.sampled_from(["prompt", "messages", "model", "extra"]))] = draw(WILD)
    return (CHAT if chat else COMPLETIONS), body


@pytest.fixture(scope="module")
def fuzz_client(loaded: Checkpoint) -> Iterator[httpx.Client]:
    from fastapi.testclient import TestClient

    from scratchlm.server.app import ServerSettings, create_app

    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: worker threads only add wake-ups
    app = create_app(loaded.model, loaded.tokenizer, ServerSettings(model_name="tiny"))
    # In-process (no sockets): FastAPI's TestClient runs the app and its scheduler thread.
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client
    torch.set_num_threads(saved)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=request_bodies())
def test_fuzzed_bodies_never_give_500(
    fuzz_client: httpx.Client, case: tuple[str, dict[str, Any]]
) -> None:
    path, body = case
    raw = json.dumps(body)  # lone surrogates become \\ud800 escapes, NaN the NaN literal
    response = fuzz_client.post(
        path, content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        return
    if body.get("stream") is True:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", response.text
        assert not any('"error"' in event for event in events[:-1]), response.text
    else:
        prompt = body.get("prompt")
        several = isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
        prompts = len(prompt) if several else 1
        assert len(response.json()["choices"]) == body.get("n", 1) * prompts


def test_connections_send_without_nagle_delay(server: RunningServer) -> None:
    """Every accepted connection has TCP_NODELAY: streamed chunks are small writes, and with
    Nagle's algorithm each waited for the client's (delayed, up to 40 ms) ACK of the one before
    on a kept-alive connection."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").status_code == 200  # the connection stays open (keep-alive)
        connections = list(server.server.server_state.connections)
        assert connections
        for protocol in connections:
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
