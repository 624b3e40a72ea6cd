// Live build page (builds/consumers.py). Binary frames carry
// [u64 raw start][u64 raw end][f64 worker ms][bytes of whole log lines]:
// the offsets are in the stored log, the bytes filtered for the terminal,
// so we track and acknowledge raw offsets, write each frame once, in order,
// and reconnect with ?from=<next raw offset> (no gap, no duplicate). Text
// frames are JSON: "progress" while nix runs, "status" with the whole build
// summary (a terminal one only after the last byte), "skipped". When the
// build ends the page is updated in place: no reload, so neither the page's
// nor the terminal's scroll position moves and a long log is not replayed.
(function () {
  const box = document.getElementById("build");
  const el = document.getElementById("terminal");
  const term = new Terminal({ convertEol: true, scrollback: 200000, fontSize: 13, disableStdin: true });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.addEventListener("resize", () => fit.fit());
  let next = 0;  // raw log offset of the next byte we want
  let written = 0, acked = 0;  // raw offsets the terminal has rendered / we acknowledged
  let ws = null, retry = 500, finished = false;
  let active = box.dataset.active === "1";
  let startedAt = box.dataset.started ? new Date(box.dataset.started) : null;
  const createdAt = new Date(box.dataset.created);
  // nix lowers "expected" when pending work is dropped; a counter that
  // shrinks reads like lost work, so while live we show the most seen.
  const peak = { builds: 0, downloads: 0 };
  window.kdevwebLog = { lines: 0, bytes: 0, reloads: 0, reconnects: 0, skipped: 0, status: null };  // for tests

  function byId(id) { return document.getElementById(id); }
  function set(id, value) {
    const node = byId(id);
    if (node && value !== undefined && value !== null) node.textContent = value;
  }
  function show(id, visible) { const n = byId(id); if (n) n.hidden = !visible; }

  function formatDuration(total) {  // same as builds/timefmt.py duration()
    if (total < 60) return total.toFixed(1) + " s";
    let minutes = Math.floor(Math.round(total) / 60);
    const secs = Math.round(total) % 60;
    if (minutes < 60) return minutes + " min " + String(secs).padStart(2, "0") + " s";
    const hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    return hours + " h " + String(minutes).padStart(2, "0") + " min";
  }

  function formatSize(bytes) {  // as Django's filesizeformat
    const units = ["KB", "MB", "GB", "TB", "PB"];
    if (bytes < 1024) return bytes + " bytes";
    let value = bytes / 1024, i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
    return value.toFixed(1) + "\u00a0" + units[i];
  }

  function setTime(id, iso, text) {
    const cell = byId(id);
    if (!cell || !iso || cell.querySelector("time")) return;
    const t = document.createElement("time");
    t.dateTime = iso;
    t.textContent = text;
    const ago = document.createElement("span");
    ago.className = "ago";
    ago.dataset.since = iso;
    ago.textContent = "(just now)";
    cell.replaceChildren(t, " ", ago);
  }

  function tick() {
    if (!active) { set("elapsed", ""); return; }
    const since = startedAt || createdAt;
    const seconds = Math.max(0, (Date.now() - since.getTime()) / 1000);
    set("elapsed", (startedAt ? "running for " : "waiting for ") + formatDuration(seconds));
  }
  const timer = setInterval(tick, 1000);
  tick();

  function ack() {
    if (ws && ws.readyState === WebSocket.OPEN && written > acked) {
      acked = written;
      ws.send(JSON.stringify({ type: "ack", offset: written }));
    }
  }

  function onBytes(buffer) {
    const view = new DataView(buffer);
    const start = Number(view.getBigUint64(0)), end = Number(view.getBigUint64(8));
    if (end <= next) return;  // already written (never expected: we resume at `next`)
    // Frames hold whole lines and we resume at a frame's end, so a frame
    // never starts inside what we have; one past it would be a server bug.
    if (start > next) window.kdevwebLog.skipped += start - next;
    const bytes = new Uint8Array(buffer, 24);
    next = end;
    let newlines = 0;
    for (let i = 0; i < bytes.length; i++) if (bytes[i] === 10) newlines++;
    window.kdevwebLog.lines += newlines;
    window.kdevwebLog.bytes = end;
    term.write(bytes, () => {
      written = end;
      // Acknowledge every 64 KB, and whenever the terminal has caught up.
      if (written - acked >= 65536 || written === next) ack();
    });
  }

  function liveCounts(p) {
    const parts = [];
    for (const key of ["builds", "downloads"]) {
      const c = (p && p[key]) || { done: 0, expected: 0 };
      peak[key] = Math.max(peak[key], c.expected || 0, c.done || 0);
      parts.push(key + " " + (c.done || 0) + "/" + peak[key]);
    }
    return parts.join(" · ");
  }

  function onProgress(p) {
    // A last progress batch may trail the final status: the status wins.
    if (!p || !active) return;
    set("phase", p.phase || p.stage || "starting");
    set("counts", liveCounts(p));
    const b = p.builds || {};
    set("builds-done", b.done); set("builds-expected", peak.builds);
  }

  function bootspecRows(spec) {
    const table = byId("bootspec");
    const rows = Object.entries(spec).map(([key, value]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = key;
      const td = document.createElement("td");
      const code = document.createElement("code");
      code.textContent = Array.isArray(value) ? value.join(" ")
        : (value !== null && typeof value === "object") ? JSON.stringify(value) : String(value ?? "none");
      td.appendChild(code);
      tr.append(th, td);
      return tr;
    });
    table.replaceChildren(...rows);
  }

  // Sections that appear above the log when the build ends must not push
  // the log away from a reader who is looking at it.
  function keepLogInPlace(change) {
    const before = el.getBoundingClientRect().top;
    change();
    const after = el.getBoundingClientRect().top;
    if (before < window.innerHeight && after !== before) window.scrollBy(0, after - before);
  }

  function onStatus(b) {
    const status = byId("status");
    status.textContent = b.status_label;
    status.className = "status-" + b.status;
    document.title = b.status_label + " · Build #" + b.id + " · kdevweb";
    window.kdevwebLog.status = b.status;
    set("queue", b.queue_text || "");
    set("phase", b.phase);
    if (b.started && !startedAt) startedAt = new Date(b.started);
    setTime("started-at", b.started, b.times.started);
    if (!b.terminal) {
      set("counts", liveCounts(b.progress));
      return;
    }
    active = false;
    clearInterval(timer);
    tick();
    set("counts", b.counts_text);
    set("builds-done", b.counts.builds.done); set("builds-expected", b.counts.builds.expected);
    setTime("finished-at", b.finished, b.times.finished);
    set("duration", b.duration_text);
    if (b.exit_code !== null) set("exit-code", b.exit_code);
    set("drv-path", b.drv_path);
    set("out-path", b.out_path);
    // Measured just after the result: it arrives in a later status.
    if (b.closure_size) set("closure-size", formatSize(b.closure_size) + " (" + b.closure_size + " bytes)");
    keepLogInPlace(() => {
      if (b.error) { set("error", b.error); show("error-section", true); }
      if (b.bootspec) { bootspecRows(b.bootspec); show("bootspec-section", true); }
      if (b.flake_lock) { set("flake-lock", b.flake_lock); show("flake-lock-section", true); }
      show("cancel-form", false);
      show("retry-form", true);
      show("delete-form", true);
    });
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + box.dataset.ws + (next ? "?from=" + next : ""));
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") { onBytes(ev.data); return; }
      const msg = JSON.parse(ev.data);
      retry = 500;
      if (msg.type === "progress") onProgress(msg.progress);
      else if (msg.type === "status") { if (msg.build.terminal) finished = true; onStatus(msg.build); }
      else if (msg.type === "skipped") {
        window.kdevwebLog.skipped += msg.to - msg.from;
        term.write("\r\n\x1b[33m[kdevweb: log bytes " + msg.from + "–" + msg.to +
                   " could not be fetched now; they are in the log download]\x1b[0m\r\n");
        next = Math.max(next, msg.to);
      }
    };
    ws.onclose = (ev) => {
      if (ev.code === 4403) { set("queue", "(closed: you no longer have access to this build)"); return; }
      if (finished) return;  // every byte and the final status arrived
      set("queue", "(live updates disconnected; reconnecting…)");
      window.kdevwebLog.reconnects++;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }
  window.kdevwebLog.drop = () => { if (ws) ws.close(); };  // tests: a dropped connection
  window.kdevwebLog.buffer = () => {  // the terminal's text, for tests
    const lines = [], b = term.buffer.active;
    for (let i = 0; i < b.length; i++) {
      const line = b.getLine(i), text = line.translateToString(true);
      if (line.isWrapped && lines.length) lines[lines.length - 1] += text; else lines.push(text);
    }
    return lines.join("\n");
  };
  connect();
})();
