// Times in the reader's own time zone, and "(3 min ago)" kept current.
//
// The server prints every time as <time datetime="ISO">text in the
// instance's zone</time> (builds/timefmt.py), which is right without
// JavaScript. A lab spans time zones: here each <time> is rewritten in the
// browser's zone, same layout ("2026-12-01 08:30:05 CET"), with the
// server's text kept as its title. Times that page scripts add later (the
// live build and guest pages) are caught by a MutationObserver.
(function () {
  function ago(iso) {
    // Same wording as builds/timefmt.py ago().
    const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 45) return "just now";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
    const days = Math.floor(seconds / 86400);
    return days + (days === 1 ? " day ago" : " days ago");
  }

  let format = null;
  try {
    format = new Intl.DateTimeFormat("en-GB", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    });
  } catch (e) {
    format = null;  // no Intl: the server's text stays
  }

  function local(iso) {
    const when = new Date(iso);
    if (!format || isNaN(when.getTime())) return null;
    const p = {};
    for (const part of format.formatToParts(when)) p[part.type] = part.value;
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second +
      " " + p.timeZoneName;
  }

  function localize(root) {
    const nodes = root.matches && root.matches("time[datetime]") ? [root] : [];
    if (root.querySelectorAll) nodes.push(...root.querySelectorAll("time[datetime]"));
    for (const node of nodes) {
      // Only the server's full "date time zone" texts; a page script's own
      // formats (durations, "running for") are left alone.
      if (node.textContent === node.dataset.localText || !/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d /.test(node.textContent)) {
        continue;
      }
      const text = local(node.dateTime);
      if (text === null) continue;
      node.title = node.textContent + " (server time)";
      node.dataset.localText = text;
      node.textContent = text;
    }
  }

  function refresh() {
    for (const node of document.querySelectorAll(".ago[data-since]")) {
      node.textContent = "(" + ago(node.dataset.since) + ")";
    }
    localize(document);
  }

  window.kdevwebTimes = { refresh: refresh, localize: localize, local: local };
  document.addEventListener("DOMContentLoaded", function () {
    localize(document);
    new MutationObserver(function (changes) {
      for (const change of changes) {
        for (const node of change.addedNodes) {
          if (node.nodeType === 1) localize(node);
          else if (node.parentElement) localize(node.parentElement);
        }
        if (change.type === "characterData" && change.target.parentElement) localize(change.target.parentElement);
      }
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  });
  setInterval(refresh, 20000);
})();
