// Keyboard for the review page: pick a decision, Enter settles. The page works without it.
(function () {
  "use strict";
  const form = () => document.getElementById("settle");
  const typing = (el) => el && el.matches && el.matches("input[type=text], textarea, select");

  function pick(value) {
    const input = form() && form().querySelector(`input[name="decision"][value="${value}"]`);
    if (input) input.checked = true;
  }

  document.addEventListener("keydown", (event) => {
    if (!form()) return;
    const target = event.target;
    if (typing(target)) {
      if (event.key === "Escape") { target.blur(); event.preventDefault(); }
      else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); form().requestSubmit(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      "1": () => pick("a"), "ArrowLeft": () => pick("a"),
      "2": () => pick("b"), "ArrowRight": () => pick("b"),
      "3": () => pick("tie"), "ArrowDown": () => pick("tie"),
      "x": () => pick("discard"),
      "n": () => { const note = form().querySelector("textarea[name=note]"); if (note) note.focus(); },
      "j": () => { const next = document.getElementById("next-link"); if (next) next.click(); },
      "Enter": () => form().requestSubmit(),
    };
    const action = actions[event.key] || actions[event.key.toLowerCase()];
    if (action) { event.preventDefault(); action(); }
  });
})();
