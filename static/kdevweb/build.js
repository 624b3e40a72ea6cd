// Live build page. The server sends {type: "lines", start, lines} with line
// offsets (we write each line once, in order), "progress" snapshots while
// nix runs, and "status" with the whole build summary. When the build ends
// the page is updated in place: no reload, so neither the page's nor the
// terminal's scroll position moves and a long log is not replayed.
(function () {
  const box = document.getElementById("build");
  const el = document.getElementById("terminal");
  const term = new Terminal({ convertEol: true, scrollback: 200000, fontSize: 13, disableStdin: true });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.addEventListener("resize", () => fit.fit());
  let next = 0;
  let active = box.dataset.active === "1";
  let startedAt = box.dataset.started ? new Date(box.dataset.started) : null;
  const createdAt = new Date(box.dataset.created);
  // nix lowers "expected" when pending work is dropped; a counter that
  // shrinks reads like lost work, so while live we show the most seen.
  const peak = { builds: 0, downloads: 0 };
  window.kdevwebLog = { lines: 0, reloads: 0, status: null };  // for tests and the curious

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

  function onLines(msg) {
    let lines = msg.lines;
    if (msg.start + lines.length <= next) return;
    // The server sends lines in order; a gap here means this page lost
    // track (it never should): start over from the stored log.
    if (msg.start > next) { window.kdevwebLog.reloads++; window.location.reload(); return; }
    lines = lines.slice(next - msg.start);
    term.write(lines.join("\n") + "\n");
    next += lines.length;
    window.kdevwebLog.lines = next;
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

  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + box.dataset.ws);
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "lines") onLines(msg);
    else if (msg.type === "progress") onProgress(msg.progress);
    else if (msg.type === "status") onStatus(msg.build);
  };
  ws.onclose = () => { if (active) set("queue", "(live updates disconnected: reload the page)"); };
})();
