// Eddy web console: plain JavaScript, no build step. Its live tail and publishing go through
// eddy.js, Eddy's JavaScript client (reconnect, resume by offsets, idempotent publish).
// Untrusted data (topic names, keys, values, error messages) only ever reaches the page
// through textContent / DOM properties, never through innerHTML.
import { EddyClient, EddyError } from "./eddy.js";

{
  const TAIL_MAX_ROWS = 500;
  const REFRESH_MS = 5000; // topics and consumer groups
  const PRODUCE_PATIENCE_MS = 15000; // then say the record waits for the connection
  const eddy = new EddyClient({ minDelayMs: 500, maxDelayMs: 10000 });

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
  const apiError = (status, code, message, details) => new EddyError(code, message, { status, details });

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
      throw apiError(0, "network_error", `cannot reach the server: ${err.message || err}`, {});
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
        throw apiError(response.status, String(error.code ?? "error"),
          String(error.message ?? ""), error.details ?? {});
      }
      throw apiError(response.status, `http_${response.status}`,
        `${response.status} ${response.statusText}: ${text.slice(0, 300)}`, {});
    }
    return data;
  }

  const topicPath = (name) => `/v1/topics/${encodeURIComponent(name)}`;
  const groupPath = (name) => `/v1/groups/${encodeURIComponent(name)}`;

  // --- result boxes -------------------------------------------------------------------------

  function showError(box, error) {
    const fromServer = error instanceof EddyError;
    const code = fromServer ? error.code : "invalid_input";
    const status = !fromServer ? "(not sent to the server)"
      : error.status ? `HTTP ${error.status}`
        : error.closeCode ? `WebSocket close ${error.closeCode}` : "";
    const details = fromServer ? error.details : null;
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

  function formatDuration(ms) {
    const units = [["d", 86400000], ["h", 3600000], ["min", 60000], ["s", 1000]];
    for (const [unit, size] of units) {
      if (ms >= size && ms % size === 0) return `${ms / size} ${unit}`;
    }
    return `${ms} ms`;
  }

  /** A config value for people: -1 is unlimited; *.ms values also as a duration. */
  function formatConfigValue(key, value) {
    if (value === -1) return "-1 (unlimited)";
    if (typeof value === "number" && key.endsWith(".ms") && value > 0) {
      return `${value} (${formatDuration(value)})`;
    }
    if (typeof value === "number" && key.endsWith(".bytes") && value > 0) {
      return `${value} (${formatBytes(value)})`;
    }
    return typeof value === "string" ? value : JSON.stringify(value);
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
    loading: null,
    openConfig: new Set(), // topics whose config is expanded (kept open across refreshes)
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
      el("td", { className: "config" }, configDetails(name, summary)),
      el("td", { className: "actions" }, tailButton, produceButton));
  }

  /** The topic's effective config, each value tagged with where it comes from: set on the
   * topic, or the broker's default (`config_sources`). */
  function configDetails(name, summary) {
    const config = summary.config && typeof summary.config === "object" ? summary.config : {};
    const sources = summary.config_sources && typeof summary.config_sources === "object"
      ? summary.config_sources : {};
    const keys = Object.keys(config).sort();
    const overrides = keys.filter((k) => sources[k] === "topic");
    const label = overrides.length === 0
      ? "defaults"
      : `${overrides.length} set on topic`;
    const entries = keys.map((key) => {
      const source = sources[key] === "topic" || sources[key] === "default" ? sources[key] : "unknown";
      return el("li", {
        className: `config-entry source-${source}`,
        dataset: { testid: "config-entry", key, source },
      },
      el("code", { className: "config-key" }, key),
      el("span", { className: "config-value", dataset: { testid: "config-value" } },
        formatConfigValue(key, config[key])),
      el("span", {
        className: "tag source",
        title: source === "topic" ? "set on this topic" : source === "default" ? "broker default" : "",
        dataset: { testid: "config-source" },
      }, source));
    });
    const details = el("details", {
      className: "config-details",
      open: topics.openConfig.has(name),
      dataset: { testid: "topic-config", overrides: String(overrides.length) },
    },
    el("summary", { title: "Effective config: values set on the topic, or broker defaults" }, label),
    el("ul", { className: "config-list" }, ...entries));
    details.addEventListener("toggle", () => {
      if (details.open) topics.openConfig.add(name);
      else topics.openConfig.delete(name);
    });
    return details;
  }

  // --- refresh (topics and consumer groups) -------------------------------------------------

  const refresh = { timer: null };

  function refreshAll() {
    return Promise.all([loadTopics(), loadGroups()]);
  }

  function scheduleRefresh() {
    clearInterval(refresh.timer);
    refresh.timer = topics.auto.checked
      ? setInterval(() => { if (!document.hidden) refreshAll(); }, REFRESH_MS)
      : null;
  }

  // --- consumer groups ----------------------------------------------------------------------

  const groups = {
    layout: $("groups-layout"),
    body: $("groups-body"),
    empty: $("groups-empty"),
    error: $("groups-error"),
    updated: $("groups-updated"),
    title: $("group-title"),
    summary: $("group-summary"),
    detailError: $("group-error"),
    members: $("group-members-body"),
    membersEmpty: $("group-members-empty"),
    offsets: $("group-offsets-body"),
    selected: null, // name of the group whose details are shown
    loading: null,
    again: false, // a refresh was asked for while one was running
  };

  async function loadGroups() {
    if (groups.loading) {
      groups.again = true;
      return groups.loading;
    }
    groups.loading = (async () => {
      try {
        const list = await api("GET", "/v1/groups");
        const items = Array.isArray(list && list.groups) ? list.groups : [];
        const names = items.map((g) => String(g.group));
        if (groups.selected === null || !names.includes(groups.selected)) {
          groups.selected = names.length ? names[0] : null;
        }
        const selected = groups.selected;
        let detail = null;
        let detailError = null;
        if (selected !== null) {
          try {
            detail = await api("GET", groupPath(selected));
          } catch (err) {
            detailError = err;
          }
        }
        renderGroupList(items);
        if (groups.selected === selected) renderGroupDetail(selected, detail, detailError);
        clearBox(groups.error);
      } catch (err) {
        showError(groups.error, err);
      } finally {
        groups.loading = null;
        if (groups.again) {
          groups.again = false;
          loadGroups();
        }
      }
    })();
    return groups.loading;
  }

  function selectGroup(name) {
    if (groups.selected === name) return;
    groups.selected = name;
    markSelectedGroup();
    loadGroups();
  }

  function markSelectedGroup() {
    for (const row of groups.body.children) {
      const selected = row.dataset.group === groups.selected;
      row.classList.toggle("selected", selected);
      row.setAttribute("aria-current", String(selected));
    }
  }

  function renderGroupList(items) {
    const rows = items.map((item) => {
      const name = String(item.group);
      const topicsText = Array.isArray(item.topics) ? item.topics.join(", ") : "-";
      const button = el("button", {
        type: "button",
        className: "link",
        title: `Show members and offsets of ${name}`,
        dataset: { testid: "group-select" },
      }, name);
      const row = el("tr", { dataset: { testid: "group-row", group: name } },
        el("td", { className: "name", dataset: { testid: "group-name" } }, button),
        el("td", { className: "topics", dataset: { testid: "group-topics" } }, topicsText),
        el("td", { className: "num", dataset: { testid: "group-member-count" } }, item.members));
      row.addEventListener("click", () => selectGroup(name));
      return row;
    });
    groups.body.replaceChildren(...rows);
    groups.empty.hidden = rows.length > 0;
    groups.layout.hidden = rows.length === 0;
    markSelectedGroup();
    groups.updated.textContent = `Updated ${formatTime(Date.now())}`;
  }

  function renderGroupDetail(name, detail, error) {
    groups.title.textContent = name === null ? "-" : name;
    if (error || !detail) {
      groups.summary.textContent = "";
      delete groups.summary.dataset.totalLag;
      groups.members.replaceChildren();
      groups.offsets.replaceChildren();
      groups.membersEmpty.hidden = true;
      if (error) showError(groups.detailError, error);
      else clearBox(groups.detailError);
      return;
    }
    clearBox(groups.detailError);
    const members = Array.isArray(detail.members) ? detail.members : [];
    const offsets = Array.isArray(detail.offsets) ? detail.offsets : [];
    const lags = offsets.filter((o) => typeof o.lag === "number").map((o) => o.lag);
    const totalLag = lags.reduce((sum, lag) => sum + lag, 0);
    groups.summary.dataset.totalLag = String(totalLag);
    groups.summary.textContent = `${members.length} member(s), ${offsets.length} partition(s), ` +
      `total lag ${lags.length ? totalLag : "-"}`;
    groups.members.replaceChildren(...members.map(memberRow));
    groups.membersEmpty.hidden = members.length > 0;
    groups.offsets.replaceChildren(...offsets.map(offsetRow));
  }

  function memberRow(member) {
    const id = String(member.member_id);
    const partitions = Array.isArray(member.partitions) ? member.partitions : [];
    const chips = partitions.length
      ? el("span", { className: "chips" }, ...partitions.map((p) => el("span", { className: "chip" }, p)))
      : el("span", { className: "muted", title: "more members than partitions: waits as a hot standby" },
        "none (standby)");
    return el("tr", { dataset: { testid: "group-member", member: id, topic: String(member.topic) } },
      el("td", { className: "member-id" }, el("code", { dataset: { testid: "member-id" } }, id)),
      el("td", { dataset: { testid: "member-topic" } }, member.topic),
      el("td", { dataset: { testid: "member-partitions", partitions: partitions.join(",") } }, chips),
      el("td", { dataset: { testid: "member-auto-commit" } }, member.auto_commit ? "on" : "off"),
      el("td", { className: "client" }, member.client),
      el("td", { className: "time", title: String(member.joined_at) }, formatTime(member.joined_at)));
  }

  function offsetRow(info) {
    const committed = typeof info.committed_offset === "number" ? info.committed_offset : null;
    const lag = typeof info.lag === "number" ? info.lag : null;
    const owner = typeof info.member_id === "string" ? info.member_id : null;
    const lagState = lag === null ? "none" : lag === 0 ? "zero" : "behind";
    return el("tr", {
      dataset: {
        testid: "group-offset",
        topic: String(info.topic),
        partition: String(info.partition),
      },
    },
    el("td", { dataset: { testid: "offset-topic" } }, info.topic),
    el("td", { className: "num", dataset: { testid: "offset-partition" } }, info.partition),
    el("td", {
      className: committed === null ? "num muted" : "num",
      title: committed === null ? "nothing committed yet: a new owner starts at its from=" : "",
      dataset: { testid: "offset-committed" },
    }, committed === null ? "-" : committed),
    el("td", { className: "num", dataset: { testid: "offset-hwm" } }, info.high_watermark),
    el("td", { className: "num lag", dataset: { testid: "offset-lag", state: lagState } },
      lag === null ? "-" : lag),
    el("td", { dataset: { testid: "offset-owner" } }, owner === null
      ? el("span", { className: "muted", title: "no connected member owns this partition" }, "-")
      : el("code", {}, owner)));
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
      await refreshAll();
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
        // an object, or a list of [name, value or null] (names may repeat, as in Kafka)
        if (!headers || typeof headers !== "object") {
          throw new Error(
            'headers must be a JSON object like {"source": "console"} or a list like [["trace", "a1"], ["trace", "b2"]]',
          );
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
    const patience = setTimeout(() => {
      showError(box, apiError(0, "waiting", `no answer yet (the connection is ${produce.publisher.state}): ` +
        "the record is sent as soon as the server can be reached, and stored once"));
      button.disabled = false;
    }, PRODUCE_PATIENCE_MS);
    try {
      const meta = await publisherFor(topic).send(record);
      showOk(box, "Produced to ", el("code", {}, topic),
        " partition ", el("strong", { dataset: { testid: "produced-partition" } }, meta.partition),
        " at offset ", el("strong", { dataset: { testid: "produced-offset" } }, meta.offset),
        ` (${formatTime(meta.timestamp)}).`);
      await refreshAll(); // high watermarks and group lag changed
    } catch (err) {
      showError(box, err);
    } finally {
      clearTimeout(patience);
      button.disabled = false;
    }
  }

  // One publishing WebSocket, for the topic produced to last. Idempotent: a record whose ack
  // was lost with a dropped connection is sent again and stored once.
  const produce = { publisher: null, topic: null };

  function publisherFor(topic) {
    const current = produce.publisher;
    if (current && produce.topic === topic && current.state !== "failed" && current.state !== "stopped") {
      return current;
    }
    if (current) current.close();
    produce.topic = topic;
    produce.publisher = eddy.publisher(topic, { idempotent: true });
    return produce.publisher;
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
    subscription: null, // eddy.js Subscription: reconnects and resumes by offsets by itself
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
    const positions = tail.subscription ? Object.entries(tail.subscription.positions()) : [];
    tail.positions.textContent = positions.length
      ? positions.map(([p, o]) => `${p}:${o}`).join(",")
      : "-";
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
    const subscription = eddy.subscribe(topic, {
      from: tail.from.value === "earliest" ? "earliest" : "latest",
      keys: tail.keys.value.split(",").map((k) => k.trim()).filter((k) => k !== ""),
      onRecord(record) {
        renderPositions();
        addTailRow(record);
      },
    });
    tail.subscription = subscription;
    const current = (fn) => (value) => { if (tail.subscription === subscription) fn(value); };
    subscription.on("state", current((state) => {
      if (state === "connecting") setTailState("connecting", "connecting");
    }));
    subscription.on("subscribed", current((frame) => {
      const resets = Object.entries(frame.partitions || {}).filter(([, info]) => info && info.reset);
      renderPositions();
      setTailState("live", `live on ${topic}`);
      clearBox(tail.error);
      if (resets.length) {
        showOk(tail.error, `Offsets of partition(s) ${resets.map(([p]) => p).join(", ")} were removed ` +
          "by retention; delivery restarted at the log start.");
      }
      loadTopics(); // subscribing may have auto-created the topic
    }));
    subscription.on("disconnect", current(({ code, reason, delayMs }) => {
      tail.close.textContent = describeClose(code, reason);
      setTailState("reconnecting", `${describeClose(code)}; reconnecting in ${(delayMs / 1000).toFixed(1)} s`);
    }));
    subscription.on("error", current((error) => {
      // A permanent error: the server's error frame says why; the subscription has stopped.
      tail.close.textContent = error.closeCode ? describeClose(error.closeCode, error.message) : "-";
      showError(tail.error, error);
      setTailState("closed", error.closeCode ? `closed: ${describeClose(error.closeCode)}` : "failed");
      tail.stop.disabled = true;
      tail.subscription = null;
    }));
    tail.start.disabled = false;
    tail.stop.disabled = false;
    renderPositions();
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
    const subscription = tail.subscription;
    tail.subscription = null;
    if (subscription) subscription.close();
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
  $("topics-refresh").addEventListener("click", () => refreshAll());
  $("groups-refresh").addEventListener("click", () => refreshAll());
  topics.auto.addEventListener("change", scheduleRefresh);
  window.addEventListener("pagehide", () => {
    stopTail(false);
    if (produce.publisher) produce.publisher.close();
  });

  checkHealth();
  setInterval(checkHealth, 15000);
  refreshAll();
  scheduleRefresh();
  document.body.dataset.ready = "true";
}
