// Configuration form: show a section only when it applies (data-when =
// "<field>=<value>": the monitoring options with the monitoring profile,
// the baremetal root with mode baremetal), and add/remove share, storage
// and source rows in place. Without this script every section shows and
// the form offers one empty row per list, which also works.
"use strict";

(function () {
  const form = document.getElementById("config-form");
  if (!form) return;

  function chosen(name) {
    const inputs = form.querySelectorAll(`[name="${name}"]`);
    const values = [];
    inputs.forEach((el) => {
      if ((el.type === "checkbox" || el.type === "radio") ? el.checked : true) values.push(el.value);
    });
    return values;
  }

  function update() {
    form.querySelectorAll("[data-when]").forEach((el) => {
      const [name, value] = el.dataset.when.split("=");
      el.hidden = !chosen(name).includes(value);
    });
  }

  function renumber(list, prefix) {
    const total = form.querySelector(`[name="${prefix}-TOTAL_FORMS"]`);
    total.value = list.querySelectorAll(".row").length;
  }

  form.querySelectorAll("fieldset.rows").forEach((box) => {
    const prefix = box.dataset.prefix;
    const list = box.querySelector(".row-list");
    const template = box.querySelector("template.empty-row");
    const add = box.querySelector("button.add-row");
    box.querySelector(".no-js-note").hidden = true;
    add.hidden = false;
    add.addEventListener("click", () => {
      const index = list.querySelectorAll(".row").length;
      const html = template.innerHTML.replace(/__prefix__/g, String(index));
      list.insertAdjacentHTML("beforeend", html);
      renumber(list, prefix);
      const first = list.lastElementChild.querySelector("input, select");
      if (first) first.focus();
    });
    // "remove" ticks Django's DELETE box and hides the row; the server drops it.
    list.addEventListener("change", (event) => {
      const box = event.target;
      if (box.name && box.name.endsWith("-DELETE")) box.closest(".row").classList.toggle("removed", box.checked);
    });
  });

  form.addEventListener("change", update);
  update();
})();
