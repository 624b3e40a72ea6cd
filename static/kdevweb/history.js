// History page: rows of queued and running builds follow their build
// (status and duration) with a small poll; it stops when none is active.
(function () {
  const table = document.getElementById("history");
  if (!table) return;
  function activeRows() { return table.querySelectorAll("tr[data-active='1']"); }
  async function poll() {
    const rows = activeRows();
    if (!rows.length) return;
    const ids = Array.from(rows, (r) => r.dataset.build).join(",");
    try {
      const resp = await fetch(table.dataset.states + "?ids=" + ids, { credentials: "same-origin" });
      if (resp.ok) {
        const states = (await resp.json()).builds;
        for (const row of rows) {
          const s = states[row.dataset.build];
          if (!s) continue;
          const cell = row.querySelector("td.status");
          cell.textContent = s.label;
          cell.className = "status status-" + s.status;
          row.querySelector("td.duration").textContent = s.duration;
          if (s.terminal) delete row.dataset.active;
        }
      }
    } catch (e) { /* offline for a moment: try again */ }
    if (activeRows().length) setTimeout(poll, 3000);
  }
  setTimeout(poll, 3000);
})();
