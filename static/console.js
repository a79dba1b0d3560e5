// Eddy web console: plain JavaScript, no build step, no dependencies.
// Untrusted data (topic names, keys, values, error messages) only ever reaches the page
// through textContent / DOM properties, never through innerHTML.
"use strict";

(() => {
  const TAIL_MAX_ROWS = 500;
  const TOPICS_REFRESH_MS = 5000;
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;

  // Close codes of the subscribe endpoint (openapi/asyncapi.yaml).
  const CLOSE_CODES = {
    1000: "closed normally",
    1001: "server going away",
    1006: "connection lost",
    1009: "frame too large",
    1011: "server error",
    1012: "server restarting",
    4400: "bad parameters",
    4401: "unauthorized",
    4403: "forbidden",
    4404: "topic not found (or deleted)",
    4408: "consumer too slow",
  };
  // Closes after which reconnecting would only fail the same way.
  const FINAL_CLOSE_CODES = new Set([1000, 1009, 4400, 4401, 4403, 4404]);

  const $ = (id) => {
    const el = document.getElementById(id);
    if (!el) throw new Error(`missing element #${id}`);
    return el;
  };

  /** Build an element: el("td", {className: "num", dataset: {x: "1"}}, "text", child, ...). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "attrs") {
        for (const [attr, attrValue] of Object.entries(value)) node.setAttribute(attr, attrValue);
      } else node[name] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // --- HTTP ---------------------------------------------------------------------------------

  /** An error answered by the API (its JSON error shape), or a transport failure. */
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network_error", `cannot reach the server: ${err.message || err}`, {});
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = data && typeof data === "object" ? data.error : null;
      if (error && typeof error === "object") {
        throw new ApiError(response.status, String(error.code ?? "error"),
          String(error.message ?? ""), error.details ?? {});
      }
      throw new ApiError(response.status, `http_${response.status}`,
        `${response.status} ${response.statusText}: ${text.slice(0, 300)}`, {});
    }
    return data;
  }

  const topicPath = (name) => `/v1/topics/${encodeURIComponent(name)}`;

  // --- result boxes -------------------------------------------------------------------------

  function showError(box, error) {
    const fromServer = error instanceof ApiError;
    const code = fromServer ? error.code : "invalid_input";
    const status = !fromServer ? "(not sent to the server)" : error.status ? `HTTP ${error.status}` : "";
    const details = error instanceof ApiError ? error.details : null;
    const panel = el("div", { className: "api-error", dataset: { testid: "api-error" } },
      el("div", { className: "error-head" },
        el("strong", {}, "Error "),
        el("code", { className: "error-code", dataset: { testid: "error-code" } }, code),
        status ? el("span", { className: "muted" }, ` ${status}`) : null),
      el("div", { className: "error-message", dataset: { testid: "error-message" } },
        error.message || "(no message)"));
    if (details && typeof details === "object" && Object.keys(details).length) {
      panel.append(el("details", {},
        el("summary", {}, "details"),
        el("pre", { className: "error-details", dataset: { testid: "error-details" } },
          JSON.stringify(details, null, 2))));
    }
    box.replaceChildren(panel);
  }

  function showOk(box, ...content) {
    box.replaceChildren(el("div", { className: "ok", dataset: { testid: "ok" } }, ...content));
  }

  function clearBox(box) {
    box.replaceChildren();
  }

  // --- formatting ---------------------------------------------------------------------------

  function formatBytes(n) {
    if (typeof n !== "number") return "-";
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let value = n / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
  }

  function formatTime(ms) {
    if (typeof ms !== "number") return "-";
    const d = new Date(ms);
    const pad = (v, n = 2) => String(v).padStart(n, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function formatValue(record) {
    if (typeof record.value_base64 === "string") return { text: record.value_base64, binary: true };
    return { text: JSON.stringify(record.value === undefined ? null : record.value), binary: false };
  }

  // --- topics -------------------------------------------------------------------------------

  const topics = {
    body: $("topics-body"),
    error: $("topics-error"),
    empty: $("topics-empty"),
    updated: $("topics-updated"),
    names: $("topic-names"),
    auto: $("topics-auto"),
    timer: null,
    loading: null,
  };

  async function loadTopics() {
    if (topics.loading) return topics.loading;
    topics.loading = (async () => {
      try {
        const list = await api("GET", "/v1/topics");
        const summaries = Array.isArray(list && list.topics) ? list.topics : [];
        const details = await Promise.all(summaries.map((t) =>
          api("GET", topicPath(t.name)).catch((err) => ({ name: t.name, failed: err }))));
        renderTopics(summaries, details);
        clearBox(topics.error);
      } catch (err) {
        showError(topics.error, err);
      } finally {
        topics.loading = null;
      }
    })();
    return topics.loading;
  }

  function renderTopics(summaries, details) {
    const rows = summaries
      .map((summary, i) => ({ summary, detail: details[i] }))
      .sort((a, b) => (a.summary.name < b.summary.name ? -1 : a.summary.name > b.summary.name ? 1 : 0))
      .map(({ summary, detail }) => topicRow(summary, detail));
    topics.body.replaceChildren(...rows);
    topics.empty.hidden = rows.length > 0;
    topics.names.replaceChildren(...summaries.map((t) => el("option", { value: t.name })));
    topics.updated.textContent = `Updated ${formatTime(Date.now())}`;
  }

  function topicRow(summary, detail) {
    const name = String(summary.name);
    const partitions = detail && Array.isArray(detail.partitions) ? detail.partitions : null;
    let watermarks;
    let records = "-";
    let size = "-";
    if (partitions) {
      watermarks = el("span", { className: "hwms" }, ...partitions.map((p) =>
        el("span", {
          className: "hwm",
          title: `partition ${p.partition}: log start ${p.log_start_offset}, high watermark ${p.high_watermark}`,
          dataset: { testid: "partition-hwm", partition: String(p.partition), hwm: String(p.high_watermark) },
        }, `${p.partition}: ${p.high_watermark}`)));
      records = partitions.reduce((sum, p) => sum + (p.high_watermark - p.log_start_offset), 0);
      size = formatBytes(partitions.reduce((sum, p) => sum + (p.size_bytes || 0), 0));
    } else {
      const why = detail && detail.failed ? `${detail.failed.code}: ${detail.failed.message}` : "unknown";
      watermarks = el("span", { className: "muted", title: why }, "unavailable");
    }
    const tailButton = el("button", { type: "button", className: "small", title: `Tail ${name}` }, "Tail");
    tailButton.addEventListener("click", () => {
      tail.topic.value = name;
      startTail();
      tail.topic.scrollIntoView({ behavior: "smooth", block: "center" });
    });
    const produceButton = el("button", { type: "button", className: "small", title: `Produce to ${name}` }, "Produce");
    produceButton.addEventListener("click", () => {
      $("produce-topic").value = name;
      $("produce-value").focus();
    });
    return el("tr", { dataset: { testid: "topic-row", topic: name } },
      el("td", { className: "name", dataset: { testid: "topic-name" } }, name),
      el("td", { className: "num", dataset: { testid: "topic-partitions" } }, summary.partitions),
      el("td", { dataset: { testid: "topic-hwms" } }, watermarks),
      el("td", { className: "num", dataset: { testid: "topic-records" } }, records),
      el("td", { className: "num" }, size),
      el("td", { className: "actions" }, tailButton, produceButton));
  }

  function scheduleTopicRefresh() {
    clearInterval(topics.timer);
    topics.timer = topics.auto.checked
      ? setInterval(() => { if (!document.hidden) loadTopics(); }, TOPICS_REFRESH_MS)
      : null;
  }

  // --- create -------------------------------------------------------------------------------

  async function createTopic(event) {
    event.preventDefault();
    const box = $("create-result");
    const button = $("create-submit");
    const name = $("create-name").value.trim();
    const partitionsText = $("create-partitions").value.trim();
    const body = { name };
    if (partitionsText !== "") {
      const partitions = Number(partitionsText);
      if (!Number.isInteger(partitions)) {
        showError(box, new Error("partitions must be a whole number"));
        return;
      }
      body.partitions = partitions;
    }
    button.disabled = true;
    try {
      const created = await api("POST", "/v1/topics", body);
      showOk(box, "Created topic ", el("code", {}, created.name), ` with ${created.partitions} partition(s).`);
      $("create-name").value = "";
      await loadTopics();
    } catch (err) {
      showError(box, err);
    } finally {
      button.disabled = false;
    }
  }

  // --- produce ------------------------------------------------------------------------------

  async function produceRecord(event) {
    event.preventDefault();
    const box = $("produce-result");
    const button = $("produce-submit");
    const topic = $("produce-topic").value.trim();
    const key = $("produce-key").value;
    const partitionText = $("produce-partition").value.trim();
    const valueText = $("produce-value").value;
    const headersText = $("produce-headers").value.trim();
    const record = { key: key === "" ? null : key };
    try {
      if (topic === "") throw new Error("enter a topic");
      try {
        record.value = valueText.trim() === "" ? null : JSON.parse(valueText);
      } catch (err) {
        throw new Error(`value is not valid JSON (${err.message}); quote plain text like "hello"`);
      }
      if (headersText !== "") {
        let headers;
        try {
          headers = JSON.parse(headersText);
        } catch (err) {
          throw new Error(`headers are not valid JSON (${err.message})`);
        }
        if (!headers || typeof headers !== "object" || Array.isArray(headers)) {
          throw new Error('headers must be a JSON object like {"source": "console"}');
        }
        record.headers = headers;
      }
      if (partitionText !== "") {
        const partition = Number(partitionText);
        if (!Number.isInteger(partition)) throw new Error("partition must be a whole number");
        record.partition = partition;
      }
    } catch (err) {
      showError(box, err);
      return;
    }
    button.disabled = true;
    try {
      const result = await api("POST", `${topicPath(topic)}/records`, record);
      const meta = result.offsets[0];
      showOk(box, "Produced to ", el("code", {}, topic),
        " partition ", el("strong", { dataset: { testid: "produced-partition" } }, meta.partition),
        " at offset ", el("strong", { dataset: { testid: "produced-offset" } }, meta.offset),
        ` (${formatTime(meta.timestamp)}).`);
      await loadTopics();
    } catch (err) {
      showError(box, err);
    } finally {
      button.disabled = false;
    }
  }

  // --- live tail ----------------------------------------------------------------------------

  const tail = {
    topic: $("tail-topic"),
    from: $("tail-from"),
    keys: $("tail-keys"),
    status: $("tail-status"),
    body: $("tail-body"),
    count: $("tail-count"),
    empty: $("tail-empty"),
    positions: $("tail-positions"),
    close: $("tail-close"),
    error: $("tail-error"),
    start: $("tail-start"),
    stop: $("tail-stop"),
    socket: null,
    session: null, // {topic, from, keys, next: Map partition -> next offset, attempts, timer}
  };

  function setTailState(state, text) {
    tail.status.dataset.state = state;
    tail.status.textContent = text || state;
  }

  function describeClose(code, reason) {
    const meaning = CLOSE_CODES[code] || "closed";
    return `${code} ${meaning}${reason ? ` (${reason})` : ""}`;
  }

  function renderPositions() {
    const next = tail.session ? tail.session.next : null;
    if (!next || next.size === 0) {
      tail.positions.textContent = "-";
      return;
    }
    tail.positions.textContent = [...next.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([p, o]) => `${p}:${o}`)
      .join(",");
  }

  function subscribeUrl(session) {
    const params = new URLSearchParams();
    params.set("from", session.from);
    if (session.next.size > 0) {
      // Resume exactly where we were: the next offset of every partition we know.
      params.set("offsets", [...session.next.entries()].map(([p, o]) => `${p}:${o}`).join(","));
    }
    if (session.keys.length > 0) params.set("keys", session.keys.join(","));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${topicPath(session.topic)}/ws?${params}`;
  }

  function startTail(event) {
    if (event) event.preventDefault();
    const topic = tail.topic.value.trim();
    if (topic === "") {
      showError(tail.error, new Error("enter a topic to tail"));
      return;
    }
    stopTail(false);
    clearBox(tail.error);
    tail.close.textContent = "-";
    tail.session = {
      topic,
      from: tail.from.value === "earliest" ? "earliest" : "latest",
      keys: tail.keys.value.split(",").map((k) => k.trim()).filter((k) => k !== ""),
      next: new Map(),
      attempts: 0,
      timer: null,
    };
    tail.start.disabled = false;
    tail.stop.disabled = false;
    renderPositions();
    connect(tail.session);
  }

  function connect(session) {
    if (tail.session !== session) return;
    setTailState("connecting", session.attempts ? `reconnecting (attempt ${session.attempts + 1})` : "connecting");
    let socket;
    try {
      socket = new WebSocket(subscribeUrl(session));
    } catch (err) {
      showError(tail.error, err);
      setTailState("closed", "failed");
      return;
    }
    tail.socket = socket;
    socket.addEventListener("message", (msg) => {
      if (tail.session !== session) return;
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      onFrame(session, frame);
    });
    socket.addEventListener("close", (ev) => {
      if (tail.socket === socket) tail.socket = null;
      if (tail.session !== session) return;
      tail.close.textContent = describeClose(ev.code, ev.reason);
      if (FINAL_CLOSE_CODES.has(ev.code)) {
        setTailState("closed", `closed: ${describeClose(ev.code)}`);
        tail.stop.disabled = true;
        tail.session = null;
        return;
      }
      session.attempts += 1;
      const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.min(session.attempts - 1, 5));
      setTailState("reconnecting", `${describeClose(ev.code)}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
      session.timer = setTimeout(() => connect(session), delay);
    });
  }

  function onFrame(session, frame) {
    switch (frame && frame.type) {
      case "subscribed":
      case "assignment": {
        session.attempts = 0;
        const parts = frame.partitions && typeof frame.partitions === "object" ? frame.partitions : {};
        const resets = [];
        for (const [p, info] of Object.entries(parts)) {
          if (info && typeof info.offset === "number") session.next.set(Number(p), info.offset);
          if (info && info.reset) resets.push(p);
        }
        renderPositions();
        setTailState("live", `live on ${session.topic}`);
        clearBox(tail.error);
        if (resets.length) {
          showOk(tail.error, `Offsets of partition(s) ${resets.join(", ")} were removed by retention; ` +
            "delivery restarted at the log start.");
        }
        loadTopics(); // subscribing may have auto-created the topic
        break;
      }
      case "record":
        session.next.set(frame.partition, frame.offset + 1);
        renderPositions();
        addTailRow(frame);
        break;
      case "error":
        showError(tail.error, new ApiError(0, String(frame.code ?? "error"),
          String(frame.message ?? ""), frame.details ?? {}));
        break;
      default:
        break;
    }
  }

  function addTailRow(record) {
    const value = formatValue(record);
    const keyCell = record.key === null || record.key === undefined
      ? el("td", { className: "key null", dataset: { testid: "tail-key" } }, "null")
      : el("td", { className: "key", dataset: { testid: "tail-key" } }, record.key);
    const valueCell = el("td", { className: "value", title: value.text, dataset: { testid: "tail-value" } },
      value.binary ? el("span", { className: "tag" }, "base64") : null, value.text);
    const row = el("tr", {
      className: "fresh",
      dataset: {
        testid: "tail-row",
        partition: String(record.partition),
        offset: String(record.offset),
      },
    },
    el("td", { className: "num", dataset: { testid: "tail-partition" } }, record.partition),
    el("td", { className: "num", dataset: { testid: "tail-offset" } }, record.offset),
    keyCell,
    valueCell,
    el("td", { className: "time", title: String(record.timestamp) }, formatTime(record.timestamp)));
    tail.body.prepend(row);
    while (tail.body.childElementCount > TAIL_MAX_ROWS) tail.body.lastElementChild.remove();
    renderTailCount();
  }

  function renderTailCount() {
    tail.count.textContent = String(tail.body.childElementCount);
    tail.empty.hidden = tail.body.childElementCount > 0;
  }

  function stopTail(userAction = true) {
    const session = tail.session;
    tail.session = null;
    if (session && session.timer) clearTimeout(session.timer);
    if (tail.socket) {
      tail.socket.close(1000, "stopped by user");
      tail.socket = null;
    }
    tail.stop.disabled = true;
    if (userAction) setTailState("stopped", "stopped");
  }

  function clearTail() {
    tail.body.replaceChildren();
    renderTailCount();
  }

  // --- health -------------------------------------------------------------------------------

  async function checkHealth() {
    const pill = $("health");
    try {
      const response = await fetch("/healthz");
      pill.dataset.state = response.ok ? "ok" : "error";
      pill.textContent = response.ok ? "server up" : `server ${response.status}`;
    } catch (_) {
      pill.dataset.state = "error";
      pill.textContent = "server unreachable";
    }
  }

  // --- wiring -------------------------------------------------------------------------------

  $("create-form").addEventListener("submit", createTopic);
  $("produce-form").addEventListener("submit", produceRecord);
  $("tail-form").addEventListener("submit", startTail);
  tail.stop.addEventListener("click", () => stopTail(true));
  $("tail-clear").addEventListener("click", clearTail);
  $("topics-refresh").addEventListener("click", () => loadTopics());
  topics.auto.addEventListener("change", scheduleTopicRefresh);
  window.addEventListener("pagehide", () => stopTail(false));

  checkHealth();
  setInterval(checkHealth, 15000);
  loadTopics();
  scheduleTopicRefresh();
  document.body.dataset.ready = "true";
})();
