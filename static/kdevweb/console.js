// Guest console page. Binary frames carry [8-byte console offset][bytes];
// we write each byte once, in order, and acknowledge what the terminal has
// rendered (the server pulls more only while < 1 MB is unacknowledged, so
// a slow tab never makes the server buffer for it). Text frames are JSON
// control messages. A dropped socket reconnects with ?from=<next offset>.
(function () {
  const box = document.getElementById("console");
  const canTypeAtLoad = box.dataset.canType === "1";
  let canType = canTypeAtLoad;
  const term = new Terminal({ scrollback: 100000, fontSize: 13, disableStdin: !canType, cursorBlink: canType });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  const search = typeof SearchAddon !== "undefined" ? new SearchAddon.SearchAddon() : null;
  if (search) term.loadAddon(search);
  term.open(document.getElementById("terminal"));
  fit.fit();
  window.addEventListener("resize", () => fit.fit());

  const state = { next: null, written: 0, acked: 0, reconnects: 0, closedCode: null, role: null };
  window.kdevwebConsole = state;  // for tests and the curious
  const encoder = new TextEncoder();
  let ws = null;
  let retry = 500;

  function byId(id) { return document.getElementById(id); }
  function set(id, text) { const n = byId(id); if (n) n.textContent = text; }
  function notice(text) { const n = byId("console-notice"); n.textContent = text; n.hidden = !text; }

  function ack() {
    if (ws && ws.readyState === WebSocket.OPEN && state.written > state.acked) {
      state.acked = state.written;
      ws.send(JSON.stringify({ type: "ack", offset: state.written }));
    }
  }

  function onBytes(buffer) {
    const offset = Number(new DataView(buffer).getBigUint64(0));
    const all = new Uint8Array(buffer, 8);
    const end = offset + all.length;
    if (state.next === null) state.next = offset;
    if (end <= state.next) return;  // already written
    if (offset > state.next) {  // the server never skips silently; show it if it happens
      notice("Bytes " + state.next + "–" + offset + " of this console could not be shown.");
      state.next = offset;
    }
    const bytes = all.subarray(state.next - offset);
    state.next = end;
    term.write(bytes, () => {
      state.written = end;
      // Acknowledge every 64 KB, and whenever the terminal has caught up.
      if (state.written - state.acked >= 65536 || state.written === state.next) ack();
    });
  }

  function presence(msg) {
    const names = msg.viewers.map((v) => v.user + (v.role === "viewer" ? "" : " (" + v.role + ")") +
      (v.pages > 1 ? " ×" + v.pages : ""));
    set("presence", names.join(", ") || "—");
    if (msg.typed) set("typed", msg.typed.user + " at " + new Date(msg.typed.at * 1000).toLocaleTimeString());
  }

  function setRole(role, may) {
    state.role = role;
    canType = may;
    term.options.disableStdin = !may;
    set("role-note", may ? "you can type (" + role + ")" : "read-only (" + role + ")");
  }

  function onControl(msg) {
    if (msg.type === "hello") {
      setRole(msg.role, msg.can_type);
      if (state.next === null) state.next = msg.offset;
      set("link-state", msg.connected ? "live" : "live (the guest's console is not connected now)");
      retry = 500;
    } else if (msg.type === "role") {
      setRole(msg.role, msg.can_type);
    } else if (msg.type === "presence") {
      presence(msg);
    } else if (msg.type === "refused") {
      notice("Not sent: " + msg.reason + ".");
    } else if (msg.type === "skipped") {
      notice("Bytes " + msg.from + "–" + msg.to + " could not be fetched (the host's console relay did not answer); they are in the transcript.");
      state.next = msg.to;
    } else if (msg.type === "event") {
      const e = msg.event;
      if (e.type === "boot") set("link-state", "live · boot " + e.boot);
      else if (e.type === "boot-ended") set("link-state", "live · the guest's QEMU ended (boot " + e.boot + "); waiting for the next boot");
      else if (e.type === "input-dropped") notice("Input of " + e.bytes + " bytes from " + e.user + " was not sent: " + e.reason + ".");
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const from = state.next === null ? "" : "?from=" + state.next;
    ws = new WebSocket(scheme + location.host + box.dataset.ws + from);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") onControl(JSON.parse(ev.data));
      else onBytes(ev.data);
    };
    ws.onclose = (ev) => {
      state.closedCode = ev.code;
      if (ev.code === 4403) {
        set("link-state", "closed: you no longer have access to this guest (or you logged out)");
        term.options.disableStdin = true;
        return;
      }
      set("link-state", "disconnected; reconnecting…");
      state.reconnects++;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  term.onData((data) => {
    if (canType && ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onBinary((data) => {
    if (!canType || !ws || ws.readyState !== WebSocket.OPEN) return;
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    ws.send(bytes);
  });

  const form = byId("search-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (search) search.findNext(byId("search").value);
  });
  byId("search-prev").addEventListener("click", () => { if (search) search.findPrevious(byId("search").value); });
  byId("copy-button").addEventListener("click", () => {
    const text = term.getSelection();
    if (text && navigator.clipboard) navigator.clipboard.writeText(text);
  });
  window.kdevwebConsole.selection = () => term.getSelection();
  window.kdevwebConsole.buffer = () => {  // the terminal's text, for tests
    const lines = [];
    const b = term.buffer.active;
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines.join("\n");
  };
  connect();
})();
