// Live build log and progress. The server sends {type: "lines", start, lines}
// with line offsets; we write each line once, in order, whatever arrives.
(function () {
  const el = document.getElementById("terminal");
  const term = new Terminal({ convertEol: true, scrollback: 200000, fontSize: 13, disableStdin: true });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.addEventListener("resize", () => fit.fit());
  let next = 0;
  let wasActive = el.dataset.active === "1";
  window.kdevwebLog = { lines: 0 };  // for tests and the curious

  function set(id, value) {
    const node = document.getElementById(id);
    if (node && value !== undefined && value !== null) node.textContent = value;
  }

  function onLines(msg) {
    let lines = msg.lines;
    if (msg.start + lines.length <= next) return;
    // The server sends lines in order; a gap here means this page lost
    // track (it never should): start over from the stored log.
    if (msg.start > next) { window.location.reload(); return; }
    lines = lines.slice(next - msg.start);
    term.write(lines.join("\n") + "\n");
    next += lines.length;
    window.kdevwebLog.lines = next;
  }

  function onProgress(p) {
    if (!p) return;
    set("phase", p.phase || p.stage || "–");
    if (p.builds) { set("builds-done", p.builds.done); set("builds-expected", p.builds.expected); }
    if (p.downloads) { set("dl-done", p.downloads.done); set("dl-expected", p.downloads.expected); }
  }

  function onStatus(b) {
    const status = document.getElementById("status");
    status.textContent = b.status;
    status.className = "status-" + b.status;
    set("queue", b.queue_position ? "(position " + b.queue_position + " in the queue)" : "");
    onProgress(b.progress);
    if (b.duration_s !== null) set("duration", b.duration_s + " s");
    if (b.exit_code !== null) set("exit-code", b.exit_code);
    set("drv-path", b.drv_path);
    set("out-path", b.out_path);
    // Measured just after the result: it arrives in a later status.
    if (b.closure_size) set("closure-size", (b.closure_size / 1048576).toFixed(1) + " MiB (" + b.closure_size + " bytes)");
    if (b.terminal && wasActive) {
      // The server sent every stored line before this status; reload to show
      // the final record (paths, closure size, bootspec) rendered server-side.
      wasActive = false;
      window.location.reload();
    }
  }

  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + el.dataset.ws);
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "lines") onLines(msg);
    else if (msg.type === "progress") onProgress(msg.progress);
    else if (msg.type === "status") onStatus(msg.build);
  };
  ws.onclose = () => set("queue", wasActive ? "(live updates disconnected: reload the page)" : "");
})();
