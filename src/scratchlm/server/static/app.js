// The browser chat page of `scratchlm serve`: vanilla JS, no build step, no network
// resources beyond this server's own API. Model and user text only ever reach the page
// through text nodes (textContent / createTextNode), never as HTML.
"use strict";

(function () {
  const KEY_STORAGE = "scratchlm.apiKey";
  const SETTINGS_STORAGE = "scratchlm.settings";

  const $ = (id) => document.getElementById(id);
  const els = {
    modelName: $("model-name"),
    settingsToggle: $("settings-toggle"),
    settings: $("settings"),
    system: $("system-prompt"),
    temperature: $("temperature"),
    maxTokens: $("max-tokens"),
    newChat: $("new-chat"),
    keyForm: $("key-form"),
    apiKey: $("api-key"),
    messages: $("messages"),
    empty: $("empty"),
    error: $("error"),
    stats: $("stats"),
    composer: $("composer"),
    input: $("message"),
    send: $("send"),
    stop: $("stop"),
  };

  const state = {
    model: null, // model id sent with each request; filled from /health or /v1/models
    conversation: [], // [{role, content}] without the system prompt
    controller: null, // AbortController of the request in flight
    pendingText: null, // a message waiting for an API key
    epoch: 0, // bumped by "New chat", so a reply cut off by it leaves the new chat alone
  };

  // ---- storage -------------------------------------------------------------------------

  function storageGet(storage, key) {
    try {
      return storage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  function storageSet(storage, key, value) {
    try {
      if (value === null) storage.removeItem(key);
      else storage.setItem(key, value);
    } catch (_) {
      /* storage may be disabled: the page still works for this load */
    }
  }

  function apiKey() {
    return storageGet(window.sessionStorage, KEY_STORAGE) || "";
  }

  function loadSettings() {
    const raw = storageGet(window.localStorage, SETTINGS_STORAGE);
    if (!raw) return;
    try {
      const saved = JSON.parse(raw);
      if (typeof saved.system === "string") els.system.value = saved.system;
      if (saved.temperature !== undefined) els.temperature.value = saved.temperature;
      if (saved.maxTokens !== undefined) els.maxTokens.value = saved.maxTokens;
    } catch (_) {
      /* ignore a corrupt entry */
    }
  }

  function saveSettings() {
    storageSet(
      window.localStorage,
      SETTINGS_STORAGE,
      JSON.stringify({
        system: els.system.value,
        temperature: els.temperature.value,
        maxTokens: els.maxTokens.value,
      })
    );
  }

  // ---- rendering -----------------------------------------------------------------------

  function showError(text) {
    els.error.textContent = text || "";
    els.error.hidden = !text;
  }

  function setStats(text) {
    els.stats.textContent = text || "";
  }

  function scrollToEnd() {
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  function addMessage(role, text) {
    els.empty.hidden = true;
    const el = document.createElement("div");
    el.className = "message " + role;
    el.setAttribute("data-testid", "message");
    el.setAttribute("data-role", role);
    const body = document.createTextNode(text || "");
    el.appendChild(body);
    els.messages.appendChild(el);
    scrollToEnd();
    return { el, body };
  }

  function setBusy(busy) {
    els.send.hidden = busy;
    els.stop.hidden = !busy;
    els.send.disabled = busy;
  }

  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = Math.min(els.input.scrollHeight + 2, 200) + "px";
  }

  function showKeyForm(message) {
    els.keyForm.hidden = false;
    if (message) showError(message);
    els.apiKey.focus();
  }

  // ---- server --------------------------------------------------------------------------

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = apiKey();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  async function loadServerInfo() {
    try {
      const response = await fetch("/health", { headers: headers() });
      if (response.ok) {
        const info = await response.json();
        if (info && typeof info.model === "string") state.model = info.model;
        const needsKey = Boolean(info && (info.requires_api_key || info.auth_required));
        if (needsKey && !apiKey()) showKeyForm();
      } else if (response.status === 401) {
        showKeyForm();
      }
    } catch (_) {
      /* the chat request will report a dead server */
    }
    // /v1/models names the model when /health does not, and answers 401 when a key is needed.
    try {
      const response = await fetch("/v1/models", { headers: headers() });
      if (response.ok) {
        const listing = await response.json();
        if (!state.model && listing && listing.data && listing.data.length) {
          state.model = listing.data[0].id;
        }
      } else if (response.status === 401 && els.keyForm.hidden) {
        showKeyForm();
      }
    } catch (_) {
      /* ignore */
    }
    els.modelName.textContent = state.model || "";
    if (state.model) document.title = state.model + " · scratchlm chat";
  }

  async function errorMessage(response) {
    let text = "";
    try {
      text = await response.text();
      const parsed = JSON.parse(text);
      if (parsed && parsed.error) {
        return typeof parsed.error === "string" ? parsed.error : parsed.error.message || text;
      }
      if (parsed && parsed.detail) {
        return typeof parsed.detail === "string" ? parsed.detail : JSON.stringify(parsed.detail);
      }
    } catch (_) {
      /* not JSON */
    }
    return text || "HTTP " + response.status;
  }

  function requestBody() {
    const messages = [];
    const system = els.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    for (const message of state.conversation) messages.push(message);
    const body = {
      model: state.model || "scratchlm",
      messages: messages,
      stream: true,
      stream_options: { include_usage: true },
    };
    const temperature = parseFloat(els.temperature.value);
    if (Number.isFinite(temperature) && temperature >= 0) body.temperature = temperature;
    const maxTokens = parseInt(els.maxTokens.value, 10);
    if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
    return body;
  }

  // Reads an SSE body, calling onEvent(parsed JSON) for each `data:` line; partial lines
  // stay buffered until the rest arrives. Resolves when [DONE] or the stream ends.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const handleLine = (line) => {
      if (!line.startsWith("data:")) return false; // comments, event:, id:, blank lines
      const payload = line.slice(5).trim();
      if (payload === "[DONE]") return true;
      if (!payload) return false;
      let event;
      try {
        event = JSON.parse(payload);
      } catch (_) {
        return false;
      }
      onEvent(event);
      return false;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (handleLine(line)) {
          reader.cancel().catch(() => {});
          return;
        }
      }
    }
    buffer += decoder.decode();
    if (buffer) handleLine(buffer);
  }

  // ---- chat ----------------------------------------------------------------------------

  async function send(text) {
    if (state.controller) return;
    showError("");
    state.conversation.push({ role: "user", content: text });
    const userView = addMessage("user", text);
    const reply = addMessage("assistant", "");
    reply.el.classList.add("streaming");
    const controller = new AbortController();
    const epoch = state.epoch;
    state.controller = controller;
    setBusy(true);
    setStats("Waiting for the model…");

    const started = performance.now();
    let firstTokenAt = null;
    let deltas = 0;
    let usageTokens = null;
    let finishReason = null;
    let content = "";
    let failed = null;
    let stopped = false;

    const undoTurn = () => {
      state.conversation.pop();
      userView.el.remove();
      reply.el.remove();
      if (!state.conversation.length) els.empty.hidden = false;
    };

    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (response.status === 401) {
        const why = await errorMessage(response);
        undoTurn();
        state.pendingText = text;
        const hadKey = Boolean(apiKey());
        storageSet(window.sessionStorage, KEY_STORAGE, null);
        setStats("");
        showKeyForm(hadKey ? "The API key was not accepted: " + why : "This server needs an API key.");
        return;
      }
      if (!response.ok || !response.body) {
        failed = await errorMessage(response);
      } else {
        await readEvents(response, (event) => {
          if (event.error) {
            failed = typeof event.error === "string" ? event.error : event.error.message;
            return;
          }
          if (event.usage && typeof event.usage.completion_tokens === "number") {
            usageTokens = event.usage.completion_tokens;
          }
          const choice = event.choices && event.choices[0];
          if (!choice) return;
          const delta = choice.delta && choice.delta.content;
          if (typeof delta === "string" && delta) {
            if (firstTokenAt === null) firstTokenAt = performance.now();
            deltas += 1;
            content += delta;
            reply.body.appendData(delta);
            scrollToEnd();
          }
          if (choice.finish_reason) finishReason = choice.finish_reason;
        });
      }
    } catch (err) {
      if (err && err.name === "AbortError") stopped = true;
      else failed = (err && err.message) || String(err);
    } finally {
      if (state.controller === controller) {
        state.controller = null;
        setBusy(false);
      }
      reply.el.classList.remove("streaming");
    }

    if (epoch !== state.epoch) return; // "New chat" was pressed while this reply streamed
    if (controller.signal.aborted) stopped = true;
    if (!content && (failed || stopped)) {
      // Nothing arrived: take the turn back and return the text to the input box.
      undoTurn();
      if (!els.input.value) {
        els.input.value = text;
        autosize();
      }
      showError(failed || "");
      setStats(stopped ? "Stopped before the first token." : "");
      return;
    }
    if (failed) showError(failed);
    if (stopped) reply.el.classList.add("stopped");
    // An empty reply still takes its turn, so roles keep alternating.
    state.conversation.push({ role: "assistant", content: content });

    const ended = performance.now();
    const tokens = usageTokens !== null && !stopped ? usageTokens : deltas;
    const parts = [tokens + (tokens === 1 ? " token" : " tokens")];
    const decodeSeconds = firstTokenAt !== null ? (ended - firstTokenAt) / 1000 : 0;
    const totalSeconds = (ended - started) / 1000;
    const rateSeconds = tokens > 1 && decodeSeconds > 0 ? decodeSeconds : totalSeconds;
    if (tokens > 0 && rateSeconds > 0) parts.push((tokens / rateSeconds).toFixed(1) + " tok/s");
    if (firstTokenAt !== null) {
      parts.push("first token " + Math.round(firstTokenAt - started) + " ms");
    }
    parts.push(totalSeconds.toFixed(1) + " s");
    if (stopped) parts.push("stopped");
    else if (finishReason === "length") parts.push("max tokens reached");
    setStats(parts.join(" · "));
  }

  function submitInput() {
    const text = els.input.value;
    if (!text.trim() || state.controller) return;
    els.input.value = "";
    autosize();
    send(text);
  }

  function newChat() {
    state.epoch += 1;
    if (state.controller) state.controller.abort();
    state.conversation = [];
    state.pendingText = null;
    for (const el of Array.from(els.messages.querySelectorAll(".message"))) el.remove();
    els.empty.hidden = false;
    showError("");
    setStats("");
    els.input.focus();
  }

  // ---- wiring --------------------------------------------------------------------------

  els.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submitInput();
  });

  els.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitInput();
    }
  });
  els.input.addEventListener("input", autosize);

  els.stop.addEventListener("click", () => {
    if (state.controller) state.controller.abort();
  });

  els.newChat.addEventListener("click", newChat);
  window.addEventListener("resize", scrollToEnd);

  els.settingsToggle.addEventListener("click", () => {
    const open = els.settings.hidden;
    els.settings.hidden = !open;
    els.settingsToggle.setAttribute("aria-expanded", String(open));
  });

  for (const el of [els.system, els.temperature, els.maxTokens]) {
    el.addEventListener("change", saveSettings);
  }

  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = els.apiKey.value.trim();
    if (!key) return;
    storageSet(window.sessionStorage, KEY_STORAGE, key);
    els.apiKey.value = "";
    els.keyForm.hidden = true;
    showError("");
    if (!state.model) loadServerInfo();
    const pending = state.pendingText;
    state.pendingText = null;
    if (pending) send(pending);
    else els.input.focus();
  });

  loadSettings();
  loadServerInfo();
  els.input.focus();
})();
