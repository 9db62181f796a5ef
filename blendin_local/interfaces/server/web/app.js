// BlendIn's web page: a chat with the served pair that shows who decided each piece.
// It calls this server's OpenAI-compatible API (/v1) like any client, asking streams for
// provenance ("trace": true) and each token's likeliest alternatives (logprobs). Model and user
// text are hostile: it only ever goes into the page as textContent, never as markup.
"use strict";

(() => {
  const STORE = "blendin.chat.v1"; // the conversation, in localStorage
  const SETTINGS_STORE = "blendin.settings.v1";
  const KEY_STORE = "blendin.apiKey"; // sessionStorage: the API key, for this tab's session
  const FAILING_RATE = 0.2; // the paper: pairs above about 20% intervention tend to fail
  // A turn's statistics, as `blendin chat`'s /save writes them (GenerationResult's fields).
  const RESULT_FIELDS = ["n_interventions", "intervention_rate", "alpha_mean", "stop_reason", "elapsed_s",
                         "tokens_per_s", "seed"];
  const SOURCES = { base: "base alone", blend: "blend", guide: "guide's words" };
  const ALTERNATIVES = 3; // per token: what else the distribution it was chosen from favoured

  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("model"), chat: $("chat"), pieceInfo: $("piece-info"), live: $("live"), warning: $("warning"),
    ask: $("ask"), question: $("question"), send: $("send"), stop: $("stop"),
    method: $("method"), gamma: $("gamma"), gammaOut: $("gamma-out"), alpha: $("alpha"), alphaOut: $("alpha-out"),
    alphaAuto: $("alpha-auto"), temperature: $("temperature"), maxTokens: $("max-tokens"), system: $("system"),
    newChat: $("new-chat"), exportButton: $("export"),
    keyDialog: $("key-dialog"), keyForm: $("key-form"), keyInput: $("key-input"), keyReason: $("key-reason"),
    keyCancel: $("key-cancel"),
  };

  let card = null; // /v1/models' card: its blendin object holds the server's defaults
  let apiKey = sessionStorage.getItem(KEY_STORE) || "";
  let controller = null; // the running answer's AbortController
  let state = loadState();

  // -- storage ----------------------------------------------------------------------------------

  function emptyState() {
    return { messages: [], turns: [] };
  }

  function loadState() {
    try {
      const s = JSON.parse(localStorage.getItem(STORE));
      if (s && Array.isArray(s.messages) && Array.isArray(s.turns)) return s;
    } catch (e) { /* a damaged store: start over */ }
    return emptyState();
  }

  function saveState() {
    try {
      localStorage.setItem(STORE, JSON.stringify(state));
    } catch (e) {
      showLive("the conversation could not be kept in this browser: " + e.message);
    }
  }

  function saveSettings() {
    try {
      localStorage.setItem(SETTINGS_STORE, JSON.stringify(settings()));
    } catch (e) { /* not kept: harmless */ }
  }

  // -- settings ---------------------------------------------------------------------------------

  function settings() {
    const s = {
      method: el.method.value || "blendin",
      gamma: Number(el.gamma.value),
      alpha: el.alphaAuto.checked ? "auto" : Number(el.alpha.value),
      temperature: Number(el.temperature.value) || 0,
      max_tokens: Math.max(1, Math.floor(Number(el.maxTokens.value) || 1)),
    };
    return { ...s, system: el.system.value };
  }

  function applySettings(s) {
    if (!s) return;
    if (s.method && [...el.method.options].some((o) => o.value === s.method)) el.method.value = s.method;
    if (typeof s.gamma === "number") el.gamma.value = String(s.gamma);
    if (s.alpha === "auto" || s.alpha === null) {
      el.alphaAuto.checked = true;
    } else if (typeof s.alpha === "number") {
      el.alphaAuto.checked = false;
      el.alpha.value = String(s.alpha);
    }
    if (typeof s.temperature === "number") el.temperature.value = String(s.temperature);
    if (typeof s.max_tokens === "number") el.maxTokens.value = String(s.max_tokens);
    if (typeof s.system === "string") el.system.value = s.system;
    showSettings();
  }

  function showSettings() {
    el.gammaOut.textContent = Number(el.gamma.value).toFixed(2);
    el.alpha.disabled = el.alphaAuto.checked;
    el.alphaOut.textContent = el.alphaAuto.checked ? "auto" : Number(el.alpha.value).toFixed(2);
  }

  function fillMethods(methods) {
    el.method.replaceChildren();
    for (const m of methods) {
      const option = document.createElement("option");
      option.value = m;
      option.textContent = m;
      el.method.append(option);
    }
  }

  // -- the API ----------------------------------------------------------------------------------

  class Refused extends Error {}

  // fetch with the API key; on 401, ask for a key (once per refusal) and try again.
  async function api(path, options = {}) {
    for (;;) {
      const headers = { ...(options.headers || {}) };
      if (apiKey) headers.Authorization = "Bearer " + apiKey;
      const response = await fetch(path, { ...options, headers });
      if (response.status !== 401) return response;
      const key = await askKey(apiKey ? "That key was refused: " + (await errorText(response))
                                      : "This server needs an API key (blendin serve --api-key).");
      if (key === null) throw new Refused("no API key given");
      apiKey = key;
      sessionStorage.setItem(KEY_STORE, key);
    }
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || response.statusText;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  function askKey(reason) {
    return new Promise((resolve) => {
      el.keyReason.textContent = reason;
      el.keyInput.value = "";
      const done = (value) => {
        el.keyForm.removeEventListener("submit", onSubmit);
        el.keyCancel.removeEventListener("click", onCancel);
        el.keyDialog.removeEventListener("cancel", onCancel);
        if (el.keyDialog.open) el.keyDialog.close();
        resolve(value);
      };
      const onSubmit = (event) => {
        event.preventDefault();
        const key = el.keyInput.value.trim();
        if (key) done(key);
      };
      const onCancel = (event) => {
        event.preventDefault();
        done(null);
      };
      el.keyForm.addEventListener("submit", onSubmit);
      el.keyCancel.addEventListener("click", onCancel);
      el.keyDialog.addEventListener("cancel", onCancel);
      el.keyDialog.showModal();
      el.keyInput.focus();
    });
  }

  async function loadCard() {
    try {
      const response = await api("/v1/models");
      if (!response.ok) throw new Error(await errorText(response));
      card = (await response.json()).data[0];
    } catch (e) {
      showLive("could not read the model: " + e.message);
      fillMethods(["blendin", "base", "guide", "nudging", "ensemble"]);
      return;
    }
    const extra = card.blendin || {};
    el.model.textContent = extra.guide && extra.base ? extra.guide + " guiding " + extra.base : card.id;
    fillMethods(extra.methods || ["blendin"]);
    if (extra.max_tokens_limit) el.maxTokens.max = String(extra.max_tokens_limit);
    applySettings(extra.defaults);
  }

  // -- rendering --------------------------------------------------------------------------------

  // The source a chunk's text is shown as: the guide's words if any of its tokens are, else a
  // blend if any token is one, else the base's.
  function sourceOf(pieces) {
    if (!pieces || !pieces.length) return "none";
    if (pieces.some((p) => p.source === "guide")) return "guide";
    if (pieces.some((p) => p.source === "blend")) return "blend";
    return "base";
  }

  // A token's log-probabilities as the page keeps them: its probability and the likeliest tokens
  // with theirs ([text, probability] pairs). Anything else in the answer is left out.
  function chances(logprob) {
    if (!logprob || typeof logprob.logprob !== "number") return undefined;
    const alternatives = Array.isArray(logprob.top_logprobs) ? logprob.top_logprobs : [];
    return {
      p: Math.exp(logprob.logprob),
      alt: alternatives
        .filter((a) => a && typeof a.logprob === "number")
        .slice(0, ALTERNATIVES)
        .map((a) => [String(a.token), Math.exp(a.logprob)]),
    };
  }

  function describe(pieces) {
    if (!pieces || !pieces.length) return "no provenance";
    return pieces.map((p) => {
      const parts = [SOURCES[p.source] || String(p.source)];
      if (p.lp && typeof p.lp.p === "number") parts.push("p " + p.lp.p.toFixed(3));
      if (typeof p.base_top_p === "number") parts.push("base top-1 p " + p.base_top_p.toFixed(3));
      if (typeof p.alpha === "number") parts.push("alpha " + p.alpha.toFixed(2));
      if (typeof p.guide_top === "string") parts.push("guide's top choice " + JSON.stringify(p.guide_top));
      if (typeof p.guide_rank === "number") parts.push("the base's rank for it " + (p.guide_rank + 1));
      if (p.lp && Array.isArray(p.lp.alt) && p.lp.alt.length) {
        parts.push("likeliest " + p.lp.alt.map(([t, q]) => JSON.stringify(String(t)) + " " + Number(q).toFixed(3)).join(", "));
      }
      return parts.join(", ");
    }).join(" | ");
  }

  function pieceSpan(segment) {
    const span = document.createElement("span");
    span.className = "piece src-" + segment.s;
    span.textContent = segment.t;
    span.title = describe(segment.p);
    return span;
  }

  function messageView(message) {
    const view = document.createElement("article");
    view.className = "message " + (message.role === "user" ? "user" : "assistant");
    const who = document.createElement("h2");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : "Answer";
    const body = document.createElement("div");
    body.className = "body";
    if (message.role === "user" || !Array.isArray(message.segments)) {
      body.textContent = message.content;
    } else {
      body.tabIndex = 0; // arrow keys walk its pieces
      body.setAttribute("aria-label", "Answer; arrow keys show each piece's numbers");
      for (const segment of message.segments) body.append(pieceSpan(segment));
    }
    const note = document.createElement("p");
    note.className = "note";
    if (message.note) note.textContent = message.note;
    view.append(who, body, note);
    return view;
  }

  function render() {
    el.chat.replaceChildren(...state.messages.map(messageView));
    el.chat.scrollTop = el.chat.scrollHeight;
  }

  function showPiece(span) {
    el.pieceInfo.textContent = span ? JSON.stringify(span.textContent) + ": " + span.title : "\u00a0";
  }

  function showLive(text) {
    el.live.textContent = text;
  }

  function liveLine(stats) {
    const rate = stats.rate;
    const parts = [stats.tokens + " tokens", stats.tps.toFixed(1) + " tokens/s"];
    if (rate !== null) parts.push("intervention rate " + (100 * rate).toFixed(1) + "%");
    if (stats.stopReason) parts.push("stop: " + stats.stopReason);
    showLive(parts.join(" \u00b7 "));
    const warn = rate !== null && rate > FAILING_RATE;
    el.warning.hidden = !warn;
    el.warning.textContent = warn
      ? "Warning: the guide was blended in at more than 20% of the tokens, where the paper's pairs failed:"
        + " the guidance may be confusing the base."
      : "";
  }

  // -- asking -----------------------------------------------------------------------------------

  function requestMessages(question, system) {
    const messages = [];
    if (system) messages.push({ role: "system", content: system });
    for (let i = 0; i < state.messages.length; i += 2) {
      const user = state.messages[i], answer = state.messages[i + 1];
      if (!answer || !answer.content) continue; // a turn stopped before it wrote anything
      messages.push({ role: "user", content: user.content }, { role: "assistant", content: answer.content });
    }
    messages.push({ role: "user", content: question });
    return messages;
  }

  // The server-sent events of a response body, one parsed data line at a time.
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
        if (!data.length) continue; // a comment (keep-alive)
        const text = data.join("\n");
        if (text === "[DONE]") return;
        yield JSON.parse(text);
      }
    }
  }

  async function ask(question) {
    const s = settings();
    saveSettings();
    const user = { role: "user", content: question };
    const answer = { role: "assistant", content: "", segments: [], note: "" };
    const body = {
      model: card ? card.id : "default",
      messages: requestMessages(question, s.system),
      stream: true,
      trace: true,
      logprobs: true,
      top_logprobs: ALTERNATIVES,
      method: s.method, gamma: s.gamma, alpha: s.alpha, temperature: s.temperature, max_tokens: s.max_tokens,
    };
    state.messages.push(user, answer);
    saveState();
    render();
    const view = el.chat.lastElementChild;
    const answerBody = view.querySelector(".body");
    const note = view.querySelector(".note");
    controller = new AbortController();
    busy(true);
    const stats = { tokens: 0, interventions: 0, tps: 0, rate: null, stopReason: "", started: performance.now() };
    let first = null;
    let final = null;
    try {
      const response = await api("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorText(response));
      for await (const chunk of events(response)) {
        if (chunk.error) throw new Error(chunk.error.message);
        const choice = (chunk.choices || [])[0];
        const text = choice && choice.delta ? choice.delta.content : null;
        const pieces = chunk.blendin && chunk.blendin.pieces;
        const logprobs = choice && choice.logprobs && choice.logprobs.content;
        if (Array.isArray(pieces) && Array.isArray(logprobs) && logprobs.length === pieces.length) {
          pieces.forEach((p, i) => { if (p && typeof p === "object") p.lp = chances(logprobs[i]); });
        }
        if (pieces) {
          first = first || performance.now();
          stats.tokens += pieces.length;
          stats.interventions += pieces.filter((p) => p.source !== "base").length;
        }
        if (text) {
          const segment = { t: text, s: sourceOf(pieces), p: pieces || [] };
          answer.segments.push(segment);
          answer.content += text;
          answerBody.append(pieceSpan(segment));
          el.chat.scrollTop = el.chat.scrollHeight;
        }
        if (chunk.blendin && chunk.blendin.stop_reason) final = chunk.blendin;
        const seconds = first ? (performance.now() - first) / 1000 : 0;
        stats.tps = seconds > 0 ? stats.tokens / seconds : 0;
        stats.rate = !blends(s.method) || !stats.tokens ? null : stats.interventions / stats.tokens;
        if (final) {
          stats.tokens = chunk.usage ? chunk.usage.completion_tokens : stats.tokens;
          stats.tps = final.tokens_per_s;
          stats.rate = blends(s.method) ? final.intervention_rate : null;
          stats.stopReason = final.stop_reason;
        }
        liveLine(stats);
      }
      if (final) {
        const turn = { question, text: answer.content, method: final.method, base: final.base, guide: final.guide,
                       n_tokens: stats.tokens };
        for (const name of RESULT_FIELDS) turn[name] = final[name];
        state.turns.push(turn);
      }
    } catch (e) {
      if (e.name === "AbortError") {
        answer.note = "stopped";
        stats.stopReason = "stopped";
        liveLine(stats);
      } else {
        answer.note = "error: " + e.message;
      }
      note.textContent = answer.note;
    } finally {
      controller = null;
      busy(false);
      saveState();
    }
  }

  // Methods where the intervention rate means something: not the base or the guide alone.
  function blends(method) {
    return method !== "base" && method !== "guide";
  }

  function busy(on) {
    el.send.disabled = on;
    el.stop.disabled = !on;
    el.question.readOnly = on;
    if (!on) el.question.focus();
  }

  function stop() {
    if (controller) controller.abort();
  }

  function newChat() {
    stop();
    state = emptyState();
    saveState();
    render();
    showLive("");
    el.warning.hidden = true;
    showPiece(null);
    el.question.focus();
  }

  // The conversation in the shape of `blendin chat`'s /save.
  function exportJson() {
    const s = settings();
    const extra = (card && card.blendin) || {};
    const chosen = { method: s.method, gamma: s.gamma, alpha: s.alpha === "auto" ? null : s.alpha,
                     temperature: s.temperature, max_tokens: s.max_tokens, system: s.system || null };
    const messages = [];
    if (s.system) messages.push({ role: "system", content: s.system });
    for (const m of state.messages) messages.push({ role: m.role, content: m.content });
    const data = {
      base: extra.base || null,
      guide: extra.guide || null,
      settings: { ...(extra.defaults || {}), ...chosen },
      messages,
      turns: state.turns,
    };
    const blob = new Blob([JSON.stringify(data, null, 2) + "\n"], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "blendin-chat.json";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // -- wiring -----------------------------------------------------------------------------------

  el.ask.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = el.question.value.trim();
    if (!question || controller) return;
    el.question.value = "";
    ask(question);
  });
  el.question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.ask.requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller) stop();
  });
  el.stop.addEventListener("click", stop);
  el.newChat.addEventListener("click", newChat);
  el.exportButton.addEventListener("click", exportJson);
  for (const input of [el.gamma, el.alpha, el.alphaAuto]) input.addEventListener("input", showSettings);
  for (const input of [el.method, el.gamma, el.alpha, el.alphaAuto, el.temperature, el.maxTokens, el.system]) {
    input.addEventListener("change", saveSettings);
  }

  // Hover or focus a piece: its numbers in the info line.
  el.chat.addEventListener("mouseover", (event) => {
    const span = event.target.closest && event.target.closest(".piece");
    if (span) showPiece(span);
  });
  // Arrow keys walk an answer's pieces.
  el.chat.addEventListener("keydown", (event) => {
    const body = event.target.closest && event.target.closest(".assistant .body");
    if (!body || !["ArrowRight", "ArrowLeft", "Home", "End"].includes(event.key)) return;
    event.preventDefault();
    const spans = [...body.querySelectorAll(".piece")];
    if (!spans.length) return;
    let i = spans.findIndex((s) => s.classList.contains("current"));
    if (i >= 0) spans[i].classList.remove("current");
    if (event.key === "Home") i = 0;
    else if (event.key === "End") i = spans.length - 1;
    else i = Math.min(spans.length - 1, Math.max(0, i + (event.key === "ArrowRight" ? 1 : -1)));
    spans[i].classList.add("current");
    showPiece(spans[i]);
  });

  let stored = null;
  try {
    stored = JSON.parse(localStorage.getItem(SETTINGS_STORE));
  } catch (e) { /* ignore */ }
  render();
  showSettings();
  loadCard().then(() => applySettings(stored));
})();
