// Keeps "(3 min ago)" next to absolute times current while a page is open.
// Same wording as builds/timefmt.py ago().
(function () {
  function ago(iso) {
    const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 45) return "just now";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
    const days = Math.floor(seconds / 86400);
    return days + (days === 1 ? " day ago" : " days ago");
  }
  function refresh() {
    for (const node of document.querySelectorAll(".ago[data-since]")) {
      node.textContent = "(" + ago(node.dataset.since) + ")";
    }
  }
  window.kdevwebTimes = { refresh: refresh };
  setInterval(refresh, 20000);
})();
