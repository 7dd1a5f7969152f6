"""Every caller mistake gets a 4xx in the OpenAI error shape (never a 500), and API keys."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.server.conftest import RunningServer, StartServer

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


def assert_error_shape(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (COMPLETIONS, {"prompt": "Tom", "temperature": "hot"}, "temperature"),
        (COMPLETIONS, {"prompt": "Tom", "max_tokens": 0}, "max_tokens"),
        (COMPLETIONS, {"prompt": "Tom", "max_tokens": "many"}, "max_tokens"),
        (COMPLETIONS, {"prompt": "Tom", "temperature": 5}, "temperature"),
        (COMPLETIONS, {"prompt": "Tom", "top_p": 0}, "top_p"),
        (COMPLETIONS, {"prompt": "Tom", "top_k": 0}, "top_k"),
        (COMPLETIONS, {"prompt": "Tom", "min_p": 1.5}, "min_p"),
        (COMPLETIONS, {"prompt": "Tom", "presence_penalty": 3}, "presence_penalty"),
        (COMPLETIONS, {"prompt": "Tom", "repetition_penalty": 0}, "repetition_penalty"),
        (COMPLETIONS, {"prompt": "Tom", "n": 0}, "n"),
        (COMPLETIONS, {"prompt": "Tom", "stop": 5}, None),
        (COMPLETIONS, {"prompt": "Tom", "stream": "maybe"}, "stream"),
        (COMPLETIONS, {"prompt": []}, "prompt"),
        (COMPLETIONS, {"prompt": [10**9]}, "prompt"),
        (COMPLETIONS, {"max_tokens": 3}, "prompt"),
        (COMPLETIONS, {"prompt": "Tom", "max_tokens": 10_000}, "max_tokens"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": [{"role": "robot", "content": "beep"}]}, "messages"),
        (CHAT, {"messages": [{"role": "user"}, {"role": "system", "content": "x"}]}, "messages"),
        (CHAT, {"messages": "hello"}, "messages"),
        (CHAT, {"messages": USER, "seed": "abc"}, "seed"),
    ],
)
def test_bad_fields_are_400(
    server: RunningServer, path: str, body: dict[str, Any], param: str | None
) -> None:
    error = assert_error_shape(httpx.post(server.url + path, json=body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param)


def test_unknown_fields_are_ignored(server: RunningServer) -> None:
    body = {"prompt": "Tom", "max_tokens": 2, "logit_bias": {}, "whatever": [1, 2]}
    response = httpx.post(server.url + COMPLETIONS, json=body, timeout=30)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'"text"'])
def test_invalid_json_is_400(server: RunningServer, content: bytes) -> None:
    response = httpx.post(
        server.url + CHAT, content=content, headers={"Content-Type": "application/json"}
    )
    assert_error_shape(response, 400)


def test_prompt_over_the_context_is_400_with_the_numbers(server: RunningServer) -> None:
    prompt = list(range(5, 305))  # 300 token ids; the context is 256
    error = assert_error_shape(httpx.post(server.url + COMPLETIONS, json={"prompt": prompt}), 400)
    assert "300" in error["message"] and "256" in error["message"]
    assert error["code"] == "context_length_exceeded"
    long_text = "Tom loved to play with his red ball. " * 200
    error = assert_error_shape(
        httpx.post(server.url + CHAT, json={"messages": [{"role": "user", "content": long_text}]}),
        400,
    )
    assert "256" in error["message"]


def test_oversized_body_is_413(server: RunningServer) -> None:
    body = {"prompt": "x" * 1_100_000}
    assert_error_shape(httpx.post(server.url + COMPLETIONS, json=body), 413)

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(12):
            yield b" " * 100_000

    response = httpx.post(
        server.url + COMPLETIONS, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_error_shape(response, 413)


def test_unknown_route_and_method(server: RunningServer) -> None:
    assert_error_shape(httpx.get(server.url + "/v1/nothing"), 404)
    assert_error_shape(httpx.get(server.url + COMPLETIONS), 405)


def test_api_key(make_server: StartServer) -> None:
    running = make_server(api_key="s3cret")
    assert httpx.get(running.url + "/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        for path in ("/v1/models", COMPLETIONS, "/metrics"):
            response = httpx.post(running.url + path, json={"prompt": "a"}, headers=headers)
            if path != COMPLETIONS:
                response = httpx.get(running.url + path, headers=headers)
            error = assert_error_shape(response, 401)
            assert error["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=running.base_url, api_key="wrong", max_retries=0).models.list()
    client = OpenAI(base_url=running.base_url, api_key="s3cret", max_retries=0)
    result = client.chat.completions.create(model="tiny", messages=USER, max_tokens=3)  # type: ignore[arg-type]
    assert result.choices[0].finish_reason in ("stop", "length")


def test_cors_only_for_listed_origins(make_server: StartServer) -> None:
    running = make_server(cors_origins=["http://ui.example"])
    preflight = {
        "Origin": "http://ui.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = httpx.options(running.url + COMPLETIONS, headers=preflight)
    assert allowed.headers.get("access-control-allow-origin") == "http://ui.example"
    denied = httpx.options(
        running.url + COMPLETIONS, headers={**preflight, "Origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in denied.headers
