// Small helpers of every page; each page works without them.
//  - [data-copy="ID"] buttons copy the value of the field ID (one-time passwords, tokens);
//  - a form's [data-slug-from] slug field follows the name field until edited by hand;
//  - [data-add-row="ID"] buttons append a copy of the <template id="ID"> to its table;
//  - a [data-check-all="NAME"] checkbox ticks or clears every checkbox named NAME.
(function () {
  "use strict";

  document.addEventListener("click", async (event) => {
    const copy = event.target.closest("[data-copy]");
    if (copy) {
      const field = document.getElementById(copy.dataset.copy);
      if (!field) return;
      field.select();
      let done = false;
      try { await navigator.clipboard.writeText(field.value); done = true; }
      catch (error) { done = document.execCommand && document.execCommand("copy"); }
      copy.textContent = done ? "Copied" : "Press Ctrl+C to copy";
      return;
    }
    const add = event.target.closest("[data-add-row]");
    if (add) {
      const template = document.getElementById(add.dataset.addRow);
      const body = template && document.getElementById(template.dataset.into);
      if (!body) return;
      const index = body.querySelectorAll("tr").length;
      const html = template.innerHTML.replaceAll("__n__", String(index));
      body.insertAdjacentHTML("beforeend", html);
      const first = body.lastElementChild && body.lastElementChild.querySelector("input");
      if (first) first.focus();
      const count = document.querySelector(`input[name="${template.dataset.count}"]`);
      if (count) count.value = String(index + 1);
    }
  });

  document.addEventListener("change", (event) => {
    const all = event.target.closest("[data-check-all]");
    if (!all) return;
    document.querySelectorAll(`input[type=checkbox][name="${all.dataset.checkAll}"]`).forEach((box) => {
      box.checked = all.checked;
    });
  });

  function slugify(text) {
    return text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase()
      .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);
  }

  document.addEventListener("input", (event) => {
    const slug = event.target.form && event.target.form.querySelector("[data-slug-from]");
    if (!slug) return;
    if (event.target === slug) { slug.dataset.edited = slug.value ? "1" : ""; return; }
    if (event.target.name === slug.dataset.slugFrom && !slug.dataset.edited) slug.value = slugify(event.target.value);
  });
})();
