// Live guest state on the guest list and guest pages (guests/consumers.py).
// Every message carries a guest's whole visible state, so applying the
// latest one is always right; a lost message is repaired by the next.
(function () {
  const box = document.getElementById("guest") || document.getElementById("guests");
  if (!box || !box.dataset.ws) return;

  function timeHtml(node, t) {
    node.textContent = "";
    if (!t) return;
    const time = document.createElement("time");
    time.dateTime = t.iso;
    time.textContent = t.text;
    const ago = document.createElement("span");
    ago.className = "ago";
    ago.dataset.since = t.iso;
    ago.textContent = " (" + t.ago + ")";
    node.append(time, ago);
  }

  function field(scope, name, g) {
    const node = scope.querySelector('[data-field="' + name + '"]');
    if (!node) return;
    if (name === "started") return timeHtml(node, g.started);
    if (name === "ssh_port") { node.textContent = g.ssh_port ? "127.0.0.1:" + g.ssh_port : ""; return; }
    if (name === "pending") { node.textContent = g.pending ? "(" + g.pending.replace("_", " ") + " requested)" : ""; return; }
    if (name === "state") { node.className = "state state-" + g.state; }
    node.textContent = g[name] == null ? "" : String(g[name]);
  }

  const FIELDS = ["state", "pending", "accel", "ssh_port", "started_by", "started", "exit_text",
                  "error", "stderr_tail", "serial_tail"];

  function events(list) {
    const ol = document.getElementById("events");
    if (!ol || !list) return;
    ol.textContent = "";
    for (const e of list) {
      const li = document.createElement("li");
      const time = document.createElement("span");
      timeHtml(time, e.time);
      const kind = document.createElement("strong");
      kind.textContent = e.kind;
      li.append(time, " · " + e.who + " · ", kind,
                (e.state ? " → " + e.state : "") + (e.text ? ": " + e.text : ""));
      ol.append(li);
    }
  }

  // A guest someone else created while the list is open: a row like the
  // server's (name, state, host, configuration, kernel, up since, accel, SSH, who).
  function addRow(g) {
    const body = box.querySelector("#guest-table tbody");
    if (!body) return;
    const tr = document.createElement("tr");
    tr.dataset.guest = g.id;
    const cells = [["name"], ["state"], ["host"], ["configuration"], ["kernel"], ["started"], ["accel"],
                   ["ssh_port"], ["started_by"]];
    for (const [name] of cells) {
      const td = document.createElement("td");
      if (name === "name") {
        const a = document.createElement("a");
        a.href = box.dataset.base + g.id + "/";
        a.textContent = g.name;
        td.append(a);
      } else if (name === "state") {
        const strong = document.createElement("strong");
        strong.dataset.field = "state";
        td.append(strong);
      } else if (name === "configuration") {
        td.textContent = g.configuration + " r" + g.revision + " · build #" + g.build;
      } else if (name === "host" || name === "kernel") {
        td.textContent = g[name];
      } else {
        td.dataset.field = name;
      }
      tr.append(td);
    }
    // Columns other pages' code adds (e.g. the console cell) stay empty until a reload.
    const columns = box.querySelectorAll("#guest-table thead th").length;
    while (tr.children.length < columns) tr.append(document.createElement("td"));
    body.append(tr);
    document.getElementById("no-guests").hidden = true;
    document.getElementById("guest-table-box").hidden = false;
    return tr;
  }

  function apply(g) {
    if (box.id !== "guest" && !box.querySelector('tr[data-guest="' + g.id + '"]')) addRow(g);
    const scope = box.id === "guest" ? (String(g.id) === box.dataset.guest ? box : null)
                                     : box.querySelector('tr[data-guest="' + g.id + '"]');
    if (!scope) return;
    for (const name of FIELDS) field(scope, name, g);
    if (box.id !== "guest") return;
    document.title = g.name + " (" + g.state + ") · kdevweb";
    for (const form of box.querySelectorAll("form[data-button]")) {
      form.hidden = g.buttons.indexOf(form.dataset.button) < 0;
    }
    const err = document.getElementById("error-section");
    if (err) err.hidden = !(g.error || g.stderr_tail || g.serial_tail);
    events(g.events);
  }

  function gone(id) {
    if (box.id === "guest") {
      if (String(id) === box.dataset.guest) {
        const state = document.getElementById("state");
        if (state) state.textContent = "deleted";
        for (const form of box.querySelectorAll("form[data-button]")) form.hidden = true;
      }
      return;
    }
    const row = box.querySelector('tr[data-guest="' + id + '"]');
    if (row) row.remove();
  }

  // A dropped socket reconnects by itself: the server's first message is a
  // whole snapshot, so nothing that changed meanwhile is missed.
  let retry = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + box.dataset.ws);
    ws.onmessage = (message) => {
      const data = JSON.parse(message.data);
      retry = 500;
      if (data.type === "guest") apply(data.guest);
      else if (data.type === "snapshot") data.guests.forEach(apply);
      else if (data.type === "deleted") gone(data.id);
    };
    ws.onclose = (ev) => {
      const note = document.getElementById("pending");
      if (ev.code === 4403) {
        if (note) note.textContent = "(live updates closed: you no longer have access to this lab)";
        return;
      }
      if (note) note.textContent = "(live updates disconnected; reconnecting…)";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }
  connect();
})();
