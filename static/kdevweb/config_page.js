// Configuration page: while the revision is being evaluated, fetch the page
// again every two seconds and swap in the verdict when it is there (the
// evaluation usually takes seconds). Without this script, reload the page.
"use strict";

(function () {
  const box = document.getElementById("evaluation");
  if (!box || !box.classList.contains("eval-pending")) return;
  let tries = 0;
  const timer = setInterval(async () => {
    tries += 1;
    if (tries > 150) { clearInterval(timer); return; }
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("evaluation");
      if (fresh && !fresh.classList.contains("eval-pending")) {
        clearInterval(timer);
        document.getElementById("evaluation").replaceWith(document.adoptNode(fresh));
        const row = page.querySelector("#revisions tr.current td.eval-ok, #revisions tr.current td.eval-error");
        const mine = document.querySelector("#revisions tr.current td[class^='eval-']");
        if (row && mine) mine.replaceWith(document.adoptNode(row));
      }
    } catch (e) {
      // Network hiccup: try again on the next tick.
    }
  }, 2000);
})();
