"""The browser chat page of `scratchlm serve`, driven in headless Chromium with Playwright.

A real server runs on a tiny random checkpoint (the replies are noise: the tests check the
page's mechanics). Replies whose content matters (HTML injection, the API-key prompt) come from
canned SSE bodies served through `page.route`. Screenshots are kept under each test's tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchlm.checkpoint import Checkpoint
from tests.server.conftest import RunningServer, start_server

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # pragma: no cover - playwright is a dev dependency
    PlaywrightTimeout = TimeoutError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 844}
CHAT_ROUTE = "**/v1/chat/completions"
INJECTION = "<img src=x onerror=alert(1)>"
STEP_DELAY = 0.02  # seconds per decode step: a long reply is surely still streaming at Stop

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt install chromium)"
    ),
]


@pytest.fixture(scope="module")
def chat_server(loaded: Checkpoint) -> Iterator[RunningServer]:
    running = start_server(loaded, step_delay=STEP_DELAY)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own sessionStorage); fails the test on page errors or dialogs."""
    context = browser.new_context(viewport=DESKTOP)
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    errors: list[str] = []
    dialogs: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    opened.on("dialog", on_dialog)
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
    assert dialogs == [], f"the page opened dialogs (script ran?): {dialogs}"


def _sse(*chunks: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


def _delta(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _messages(page: Any) -> Any:
    return page.get_by_test_id("messages").get_by_test_id("message")


def _wait_for_reply(page: Any) -> str:
    """Wait until the reply in flight has finished; return the stats line."""
    page.get_by_test_id("send").wait_for(state="visible")
    stats = page.get_by_test_id("stats")
    page.wait_for_function(
        "() => /tok\\/s|tokens?|stopped/.test("
        "document.querySelector('[data-testid=stats]').textContent)"
    )
    return str(stats.text_content())


def _settings(page: Any, *, system: str | None = None, temperature: str, max_tokens: str) -> None:
    if not page.get_by_test_id("settings").is_visible():
        page.get_by_test_id("settings-toggle").click()
    if system is not None:
        page.get_by_label("System prompt").fill(system)
    page.get_by_label("Temperature").fill(temperature)
    page.get_by_label("Max tokens").fill(max_tokens)


def test_chat_streams_stops_and_starts_over(
    page: Any, chat_server: RunningServer, tmp_path: Path
) -> None:
    requests: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda request: (
            requests.append(request.post_data_json)
            if request.url.endswith("/v1/chat/completions")
            else None
        ),
    )
    page.goto(chat_server.url + "/")
    page.get_by_test_id("model-name").filter(has_text="tiny").wait_for()
    box = page.get_by_test_id("message-input")
    assert page.get_by_label("Message").count() == 1  # the input is labelled
    messages = _messages(page)

    # A streamed reply, then tokens/s.
    _settings(page, system="You are terse.", temperature="0.8", max_tokens="16")
    page.get_by_test_id("settings-toggle").click()  # close the panel again
    box.fill("Hello there")
    box.press("Enter")
    stats = _wait_for_reply(page)
    assert re.search(r"\d+ tokens? · [\d.]+ tok/s", stats), stats
    assert messages.count() == 2
    assert messages.nth(0).get_attribute("data-role") == "user"
    assert messages.nth(0).text_content() == "Hello there"
    assert messages.nth(1).get_attribute("data-role") == "assistant"
    first_reply = str(messages.nth(1).text_content())
    page.screenshot(path=tmp_path / "chat.png")

    # Shift+Enter is a newline; the second request carries the whole conversation.
    box.click()
    box.type("line one")
    box.press("Shift+Enter")
    box.type("line two")
    box.press("Enter")
    _wait_for_reply(page)
    assert messages.count() == 4
    assert messages.nth(2).text_content() == "line one\nline two"
    assert len(requests) == 2
    body = requests[1]
    assert body["stream"] is True
    assert body["model"] == "tiny"
    assert body["temperature"] == pytest.approx(0.8)
    assert body["max_tokens"] == 16
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": "line one\nline two"},
    ]

    # New chat clears the view and the history the next request sends.
    page.get_by_test_id("new-chat").click()
    assert messages.count() == 0
    assert page.get_by_test_id("stats").text_content() == ""
    box.fill("Fresh start")
    box.press("Enter")
    _wait_for_reply(page)
    assert requests[-1]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Fresh start"},
    ]

    # Stop a long reply: the partial text stays. A random model may end a reply early
    # (end-of-text), so try a few times, from a new chat each time, to catch one streaming.
    _settings(page, temperature="1.0", max_tokens="150")
    page.get_by_test_id("settings-toggle").click()
    stop = page.get_by_test_id("stop")
    stopped = False
    for attempt in range(5):
        page.get_by_test_id("new-chat").click()
        box.fill(f"Tell me a long story ({attempt})")
        box.press("Enter")
        page.wait_for_function(
            "() => (document.querySelectorAll('[data-testid=message]')[1]?.textContent ?? '')"
            " .length > 0 || !document.querySelector('[data-testid=send]').hidden"
        )
        if stop.is_visible():
            # The reply may end between the check and the click.
            with contextlib.suppress(PlaywrightTimeout):
                stop.click(timeout=2_000)
        stats = _wait_for_reply(page)
        if "stopped" in stats:
            stopped = True
            break
    assert stopped, "never caught a reply still streaming to stop it"
    reply = messages.nth(1)
    assert "stopped" in (reply.get_attribute("class") or "")
    partial = str(reply.text_content())
    assert partial
    page.wait_for_timeout(300)  # nothing more arrives after Stop
    assert reply.text_content() == partial
    assert page.get_by_test_id("send").is_visible()
    assert not stop.is_visible()

    page.set_viewport_size(PHONE)
    page.screenshot(path=tmp_path / "chat-phone.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    print(f"screenshots: {tmp_path / 'chat.png'} {tmp_path / 'chat-phone.png'}")


def test_replies_are_text_not_html(page: Any, chat_server: RunningServer, tmp_path: Path) -> None:
    # The canned reply is split mid-tag across two chunks.
    body = _sse(_delta("<img src=x "), _delta("onerror=alert(1)>"), _delta(finish="stop"))
    page.route(
        CHAT_ROUTE,
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    page.goto(chat_server.url + "/")
    box = page.get_by_test_id("message-input")
    box.fill("<b>bold?</b>")
    box.press("Enter")
    stats = _wait_for_reply(page)
    assert stats.startswith("2 tokens"), stats
    messages = _messages(page)
    assert messages.count() == 2
    assert messages.nth(0).text_content() == "<b>bold?</b>"
    assert messages.nth(1).text_content() == INJECTION
    assert page.locator("[data-testid=messages] img").count() == 0
    assert page.locator("[data-testid=messages] b").count() == 0
    page.screenshot(path=tmp_path / "injection.png")


def test_api_key_is_asked_for_and_sent(page: Any, loaded: Checkpoint, tmp_path: Path) -> None:
    server = start_server(loaded, api_key="sesame")
    try:
        sent: list[str | None] = []
        page.on(
            "request",
            lambda request: (
                sent.append(request.headers.get("authorization"))
                if request.url.endswith("/v1/chat/completions")
                else None
            ),
        )
        page.goto(server.url + "/")
        key_form = page.get_by_test_id("key-form")
        key_form.wait_for(state="visible")  # /v1/models answered 401
        page.screenshot(path=tmp_path / "api-key.png")

        # A wrong key: the message waits, the form stays.
        key_input = page.get_by_label("API key", exact=True)
        key_input.fill("wrong")
        page.get_by_test_id("api-key-save").click()
        box = page.get_by_test_id("message-input")
        box.fill("Let me in")
        box.press("Enter")
        page.get_by_test_id("error").filter(has_text="not accepted").wait_for()
        key_form.wait_for(state="visible")
        assert _messages(page).count() == 0

        # The right key: the waiting message goes out with it.
        key_input.fill("sesame")
        page.get_by_test_id("api-key-save").click()
        stats = _wait_for_reply(page)
        assert re.search(r"\d+ tokens?", stats), stats
        assert sent == ["Bearer wrong", "Bearer sesame"]
        assert _messages(page).nth(0).text_content() == "Let me in"
        assert _messages(page).count() == 2
        assert page.evaluate("sessionStorage.getItem('scratchlm.apiKey')") == "sesame"
        assert not key_form.is_visible()
    finally:
        server.stop()
