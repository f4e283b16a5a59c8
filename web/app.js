// The ldaproj page: asks the server's JSON API and draws answers and routing.
//
// A query is embedded once (/v1/embed); every later change of method or
// temperature re-ranks that embedding (/v1/search with "embedding"), so
// dragging the slider never re-runs the encoder.
"use strict";

const TAU_MIN = 0.01;
const TAU_MAX = 2;
const SLIDER_MAX = 1000;
const ROUTING_TOP = 8;
const TOP_K = 5;

const $ = (id) => document.getElementById(id);

const state = {
  apiKey: sessionStorage.getItem("ldaproj-api-key") || "",
  methods: [],          // [{name, routing}] as the server reports them
  method: "multi-head",
  temperature: 0.1,
  query: "",
  embedding: null,
  busy: false,          // a search is in flight
  again: false,         // settings changed while it was
};

function sliderToTemperature(value) {
  return TAU_MIN * Math.pow(TAU_MAX / TAU_MIN, value / SLIDER_MAX);
}

function temperatureToSlider(tau) {
  const t = Math.min(TAU_MAX, Math.max(TAU_MIN, tau));
  return Math.round((SLIDER_MAX * Math.log(t / TAU_MIN)) / Math.log(TAU_MAX / TAU_MIN));
}

function formatTau(tau) {
  return tau < 0.1 ? tau.toFixed(3) : tau < 1 ? tau.toFixed(2) : tau.toFixed(1);
}

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, body) {
  const headers = {};
  if (state.apiKey) headers["Authorization"] = "Bearer " + state.apiKey;
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    throw new ApiFailure(response.status, "bad_response", "the server answered with something other than JSON");
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    if (response.status === 401) $("key-box").hidden = false;
    throw new ApiFailure(response.status, err.code || "error", err.message || "HTTP " + response.status);
  }
  return data;
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

function currentMethod() {
  return state.methods.find((m) => m.name === state.method) || { name: state.method, routing: false };
}

function renderMethods() {
  const box = $("method-options");
  box.replaceChildren();
  for (const m of state.methods) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "method";
    input.value = m.name;
    input.checked = m.name === state.method;
    input.addEventListener("change", () => {
      state.method = m.name;
      updateTemperatureControl();
      refresh();
    });
    label.append(input, " " + m.name);
    box.append(label);
  }
}

function updateTemperatureControl() {
  const routing = currentMethod().routing;
  $("temperature").disabled = !routing;
  $("temperature-control").classList.toggle("disabled", !routing);
  $("temperature-value").textContent = formatTau(state.temperature);
}

function renderAnswers(answers) {
  const list = $("answers");
  list.replaceChildren();
  for (const a of answers) {
    const li = document.createElement("li");
    li.className = "answer";
    const head = document.createElement("div");
    head.className = "answer-head";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = a.score.toFixed(3);
    const cluster = document.createElement("span");
    cluster.className = "cluster";
    cluster.textContent = a.name ? a.name + " (" + a.cluster + ")" : a.cluster;
    head.append(score, cluster);
    const text = document.createElement("div");
    text.className = "answer-text";
    text.textContent = a.text;
    li.append(head, text);
    list.append(li);
  }
}

function renderRouting(routing) {
  const box = $("routing");
  box.replaceChildren();
  const note = $("routing-note");
  if (!routing) {
    note.textContent = "(" + state.method + " does not route through heads)";
    return;
  }
  note.textContent = "top " + routing.length + " heads, τ = " + formatTau(state.temperature);
  for (const r of routing) {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.title = "cosine to the head's centroid: " + r.similarity.toFixed(3);
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = r.name || r.cluster;
    const track = document.createElement("div");
    track.className = "bar-track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.dataset.cluster = r.cluster;
    bar.dataset.weight = String(r.weight);
    bar.style.width = (100 * Math.min(1, Math.max(0, r.weight))).toFixed(2) + "%";
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = r.weight.toFixed(3);
    row.append(label, track, value);
    box.append(row);
  }
}

// Re-ranks the current embedding with the current settings. Changes that
// arrive while a request runs are coalesced into one follow-up request.
async function refresh() {
  if (!state.embedding) return;
  if (state.busy) {
    state.again = true;
    return;
  }
  state.busy = true;
  try {
    do {
      state.again = false;
      const method = currentMethod();
      const body = {
        embedding: state.embedding,
        method: method.name,
        top_k: TOP_K,
        include_routing: true,
        routing_top: ROUTING_TOP,
      };
      if (method.routing) body.temperature = state.temperature;
      const result = await api("/v1/search", body);
      if (state.again) continue;  // already stale
      renderAnswers(result.answers);
      renderRouting(result.routing);
      setStatus("");
      document.body.dataset.state = "ready";
    } while (state.again);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    state.busy = false;
  }
}

async function ask(event) {
  event.preventDefault();
  const text = $("query").value.trim();
  if (!text) return;
  $("ask").disabled = true;
  setStatus("searching…");
  try {
    const embedded = await api("/v1/embed", { text });
    state.query = text;
    state.embedding = embedded.embedding;
    await refresh();
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("ask").disabled = false;
  }
}

async function loadInfo() {
  try {
    const info = await api("/v1/info");
    state.methods = info.methods;
    if (!state.methods.some((m) => m.name === state.method)) state.method = state.methods[0].name;
    state.temperature = info.temperature;
    $("temperature").value = String(temperatureToSlider(info.temperature));
    $("model-info").textContent =
      "projection " + info.projection + " · " + info.heads + " heads · " + info.answers + " answers · " +
      info.model + " (" + info.dim + "-d) · τ " + formatTau(info.temperature);
    renderMethods();
    updateTemperatureControl();
    document.body.dataset.info = "loaded";
    setStatus("");
  } catch (e) {
    setStatus(e.message, true);
  }
}

function init() {
  $("ask-form").addEventListener("submit", ask);
  $("temperature").addEventListener("input", () => {
    state.temperature = sliderToTemperature(Number($("temperature").value));
    updateTemperatureControl();
    refresh();
  });
  $("save-key").addEventListener("click", () => {
    state.apiKey = $("api-key").value.trim();
    sessionStorage.setItem("ldaproj-api-key", state.apiKey);
    $("key-box").hidden = true;
    loadInfo();
  });
  loadInfo();
}

document.addEventListener("DOMContentLoaded", init);
