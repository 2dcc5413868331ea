// The admin's job page (an export or an import: data-kind), kept live: events over the
// job's WebSocket, and while the socket is down the job's API document every second (the
// socket is tried again meanwhile and, once back, replays the events missed since the last
// one shown). An export ends with a Download link, an import with links to its new files.
(function () {
  "use strict";

  const root = document.getElementById("export-job");
  if (!root) return;
  const kind = root.dataset.kind || "export";

  const TERMINAL_KINDS = ["end", "error", "cancelled"];
  const FINAL_STATES = ["succeeded", "failed", "cancelled", "expired"];
  const MAX_EVENTS = 200;
  const POLL_MS = 1000;
  const SOCKET_RETRY_POLLS = 3; // try the socket again every third poll
  const SILENCE_MS = 45000; // the server sends a heartbeat every 15 s

  const el = (id) => document.getElementById(id);
  // Parts only one kind of page has (Download, Retry, SHA-256...) are simply absent.
  function setHidden(id, hidden) {
    const node = el(id);
    if (node) node.hidden = hidden;
  }
  function setText(id, text) {
    const node = el(id);
    if (node) node.textContent = text;
  }
  const job = {
    state: root.dataset.state,
    lastSeq: Number(root.dataset.after) || 0,
    progress: {
      items_done: Number(root.dataset.itemsDone) || 0,
      items_total: Number(root.dataset.itemsTotal) || 0,
      bytes_done: Number(root.dataset.bytesDone) || 0,
      bytes_total: Number(root.dataset.bytesTotal) || 0,
    },
  };
  let socket = null;
  let pollTimer = null;
  let polls = 0;
  let heardAt = Date.now();
  let finished = false; // the terminal event is shown: nothing more will come

  // Django's filesizeformat: 1024-based, one decimal, a non-breaking space.
  function filesize(bytes) {
    const units = ["KB", "MB", "GB", "TB", "PB"];
    if (bytes < 1024) return `${bytes}\u00a0byte${bytes === 1 ? "" : "s"}`;
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(1)}\u00a0${units[unit]}`;
  }

  // The same rule as exports.admin.jobs.percent_done.
  function percentDone() {
    if (job.state === "succeeded" || job.state === "expired") return 100;
    const p = job.progress;
    const [done, total] = p.bytes_total
      ? [p.bytes_done, p.bytes_total]
      : [p.items_done, p.items_total];
    return total ? Math.min(100, Math.floor((done * 100) / total)) : 0;
  }

  function render() {
    const percent = percentDone();
    const p = job.progress;
    el("job-progress").value = percent;
    el("job-progress").textContent = `${percent} %`;
    el("job-percent").textContent = `${percent} %`;
    el("job-items").textContent = `${p.items_done} / ${p.items_total}`;
    el("job-bytes").textContent = `${filesize(p.bytes_done)} / ${filesize(p.bytes_total)}`;
    const badge = el("job-state");
    badge.textContent = job.state;
    badge.className = `export-badge export-badge--${job.state}`;
    root.dataset.state = job.state;
    setHidden("job-cancel", !(job.state === "queued" || job.state === "running"));
    setHidden("job-retry", !(job.state === "failed" || job.state === "cancelled"));
    if (job.state !== "succeeded") setHidden("job-download", true);
  }

  function setState(state) {
    // Never back from an end to an active state (a late poll answer, say).
    if (FINAL_STATES.includes(job.state) && !FINAL_STATES.includes(state)) return;
    job.state = state;
  }

  function setProgress(data) {
    for (const key of Object.keys(job.progress)) {
      if (typeof data[key] === "number") job.progress[key] = data[key];
    }
  }

  // Where an import's archive is wrong: "entry files/….json, field pages" (as the admin's
  // error_place); an export's error, or the API document's, names no place.
  function place(data) {
    return ["entry", "field"].filter((key) => data[key]).map((key) => `${key} ${data[key]}`).join(", ");
  }

  function showError(code, message, data) {
    el("job-error-code").textContent = code;
    el("job-error-message").textContent = message;
    const where = place(data || {});
    if (where) setText("job-error-place", `(${where})`);
    el("job-error").hidden = false;
  }

  // An import's new files: linked by id at once, then named from the page as the server
  // renders it now that the files exist.
  function showFiles(files) {
    const box = el("job-files");
    const ids = Object.entries(files || {}).sort();
    if (!box || !ids.length || !box.hidden) return;
    const list = box.querySelector("ul");
    list.replaceChildren();
    for (const [source, id] of ids) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = root.dataset.fileUrl.replace("__id__", id);
      link.textContent = id;
      const note = document.createElement("span");
      note.className = "export-note";
      note.textContent = `${id}, from ${source}`;
      item.append(link, " ", note);
      list.append(item);
    }
    box.hidden = false;
    fetch(window.location.pathname, { credentials: "same-origin" })
      .then((response) => (response.ok ? response.text() : null))
      .then((html) => {
        const page = html && new DOMParser().parseFromString(html, "text/html");
        const named = page && page.getElementById("job-files");
        if (named && !named.hidden) el("job-files").replaceWith(named);
      })
      .catch(() => {});
  }

  function showDownload(href) {
    const link = el("job-download");
    link.href = href;
    link.hidden = false;
  }

  function live(text) {
    el("job-live").textContent = text;
  }

  // The same lines as exports.admin.jobs.event_summary, for an export's or an import's data.
  function summary(eventKind, data) {
    switch (eventKind) {
      case "queued":
        return "items_total" in data ? `${data.items_total} items planned` : "";
      case "progress": {
        const counts = `${data.items_done}/${data.items_total} items, ${filesize(data.bytes_done)} / ${filesize(data.bytes_total)}`;
        return data.phase ? `${data.phase}: ${counts}` : counts;
      }
      case "end": {
        if (!data.files) return `${filesize(data.size)}, sha256 ${String(data.sha256).slice(0, 12)}\u2026`;
        const count = Object.keys(data.files).length;
        return `${count} file${count === 1 ? "" : "s"} imported`;
      }
      case "error": {
        const where = place(data);
        return `${data.code}: ${data.message}${where ? ` (${where})` : ""}`;
      }
      default:
        return "";
    }
  }

  function logEvent(event) {
    const list = el("job-events");
    const item = document.createElement("li");
    item.dataset.seq = event.seq;
    item.className = `export-event export-event--${event.kind}`;
    const seq = document.createElement("span");
    seq.className = "export-event-seq";
    seq.textContent = `#${event.seq}`;
    const time = document.createElement("time");
    time.textContent = new Date(event.created_at).toISOString().slice(11, 19);
    const kind = document.createElement("strong");
    kind.textContent = event.kind;
    item.append(seq, " ", time, " ", kind, ` ${summary(event.kind, event.data)}`);
    list.append(item);
    while (list.children.length > MAX_EVENTS) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function applyEvent(event) {
    const data = event.data || {};
    switch (event.kind) {
      case "queued":
        setState("queued");
        setProgress(data);
        break;
      case "progress":
        setState("running");
        setProgress(data);
        break;
      case "end":
        if (kind === "import") {
          setProgress({
            items_done: job.progress.items_total, bytes_done: job.progress.bytes_total,
          });
          setState("succeeded");
          showFiles(data.files);
          break;
        }
        setProgress({
          items_done: job.progress.items_total, bytes_done: data.size, bytes_total: data.size,
        });
        setState("succeeded");
        showDownload(data.download_uri);
        break;
      case "error":
        setState("failed");
        showError(data.code, data.message, data);
        break;
      case "cancelled":
        setState("cancelled");
        break;
      default:
        return;
    }
    render();
  }

  function when(iso) {
    return iso ? `${new Date(iso).toISOString().slice(0, 19).replace("T", " ")} UTC` : "\u2014";
  }

  function applyDocument(doc) {
    el("job-started").textContent = when(doc.started_at);
    el("job-finished").textContent = when(doc.finished_at);
    el("job-attempts").textContent = `${doc.attempts} (${doc.ticks} tick${doc.ticks === 1 ? "" : "s"})`;
    setText("job-sha256", (doc.artifact && doc.artifact.sha256) || "\u2014");
    setText("job-expires", when(doc.artifact && doc.artifact.expires_at));
    setProgress(doc.progress || {});
    setState(doc.state);
    if (doc.error) showError(doc.error.code, doc.error.message);
    if (doc.state === "succeeded" && doc.links && doc.links.download) {
      showDownload(doc.links.download);
    }
    if (doc.state === "succeeded" && kind === "import") showFiles(doc.files);
    render();
  }

  // --- the socket ----------------------------------------------------------------------

  function connect() {
    if (socket || finished) return;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${window.location.host}${root.dataset.socket}?after=${job.lastSeq}`;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      socket = null;
      startPolling();
      return;
    }
    const ws = socket;
    ws.onopen = () => {
      heardAt = Date.now();
      live("live");
      stopPolling();
    };
    ws.onmessage = (message) => {
      heardAt = Date.now();
      const event = JSON.parse(message.data);
      if (event.kind === "heartbeat" || !(event.seq > job.lastSeq)) return;
      job.lastSeq = event.seq;
      logEvent(event);
      applyEvent(event);
      if (TERMINAL_KINDS.includes(event.kind)) {
        finished = true;
        stopPolling();
        live("");
        ws.close();
        refreshDetails();
      }
    };
    ws.onclose = (closed) => {
      if (socket === ws) socket = null;
      if (finished) return;
      if (closed.code === 4404) {
        live(`not allowed to follow this ${kind}`);
        return;
      }
      if (FINAL_STATES.includes(job.state)) {
        live(""); // ended (seen by polling); the log may miss its last events
        return;
      }
      live("connection lost: polling");
      startPolling();
    };
  }

  // --- polling, while the socket is down ---------------------------------------------

  function startPolling() {
    if (pollTimer || finished) return;
    pollTimer = window.setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) window.clearInterval(pollTimer);
    pollTimer = null;
  }

  function fetchDocument() {
    return fetch(root.dataset.api, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
  }

  // After the end, once: the details the events do not carry (times, attempts).
  function refreshDetails() {
    fetchDocument()
      .then((response) => (response.ok ? response.json() : null))
      .then((doc) => doc && applyDocument(doc))
      .catch(() => {});
  }

  async function poll() {
    polls += 1;
    try {
      const response = await fetchDocument();
      if (response.status === 403 || response.status === 404) {
        stopPolling();
        live(`not allowed to follow this ${kind}`);
        return;
      }
      if (response.ok) applyDocument(await response.json());
    } catch (error) {
      // Offline for now: try again at the next tick.
    }
    if (FINAL_STATES.includes(job.state)) {
      stopPolling();
      connect(); // once, to fill the event log up to the end
    } else if (!socket && polls % SOCKET_RETRY_POLLS === 0) {
      connect();
    }
  }

  // A socket that says nothing, not even a heartbeat, is as good as closed.
  window.setInterval(() => {
    if (socket && socket.readyState === WebSocket.OPEN && Date.now() - heardAt > SILENCE_MS) {
      socket.close();
    }
  }, 5000);

  // Start from the page as the server rendered it.
  if (FINAL_STATES.includes(job.state)) {
    finished = true;
  } else {
    connect();
  }
})();
