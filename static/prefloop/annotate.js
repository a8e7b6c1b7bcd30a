// Keyboard for the annotation page. The page works without this file (plain form posts);
// with it, every action has a key and the time spent on each comparison is measured here.
(function () {
  "use strict";
  let shownAt = performance.now();

  const workspace = () => document.getElementById("workspace");
  const form = () => document.getElementById("judge");
  const typing = (el) => el && el.matches && el.matches("input[type=number], input[type=text], textarea, select");

  function check(name, value) {
    const f = form();
    const input = f && f.querySelector(`input[name="${name}"][value="${value}"]`);
    if (!input) return;
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // A key pressed right after a swap must still go through htmx, not a full page post.
  function ready() {
    const ws = workspace();
    if (ws && window.htmx) window.htmx.process(ws);
  }

  function click(id) {
    ready();
    const button = document.getElementById(id);
    if (button && !button.disabled) button.click();
  }

  function submit() {
    ready();
    const f = form();
    if (f) f.requestSubmit(document.getElementById("submit-button"));
  }

  // Arrow keys choose only while they would scroll nothing: a long response or dialogue keeps
  // its keyboard scrolling (↓ as "tie" used to take it away). 1, 2 and 3 always choose.
  function scrolls(el, axis) {
    return axis === "y" ? el.scrollHeight > el.clientHeight + 1 : el.scrollWidth > el.clientWidth + 1;
  }

  function somethingScrolls(axis) {
    const page = document.scrollingElement || document.documentElement;
    if (scrolls(page, axis)) return true;
    const boxes = document.querySelectorAll("#workspace .response, #workspace .prompt, #workspace pre");
    return Array.prototype.some.call(boxes, (box) => scrolls(box, axis));
  }

  function focusFirst(selector) {
    const el = form() && form().querySelector(selector);
    if (el) { el.focus(); if (el.select) el.select(); }
  }

  // Measure from the moment a comparison is on screen to the moment it is submitted.
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "workspace") shownAt = performance.now();
  });
  document.addEventListener("htmx:load", (event) => {
    if (event.detail.elt && event.detail.elt.id === "workspace") {
      shownAt = performance.now();
      window.scrollTo({ top: 0 });
    }
  });
  document.addEventListener("submit", (event) => {
    const field = event.target.querySelector && event.target.querySelector('input[name="ms_spent"]');
    if (field) field.value = String(Math.round(performance.now() - shownAt));
  }, true);
  document.addEventListener("htmx:configRequest", (event) => {
    if ("ms_spent" in event.detail.parameters || event.detail.elt.id === "judge") {
      event.detail.parameters["ms_spent"] = String(Math.round(performance.now() - shownAt));
    }
  });

  document.addEventListener("keydown", (event) => {
    if (!workspace()) return;
    const target = event.target;
    if (typing(target)) {
      if (event.key === "Escape") { target.blur(); event.preventDefault(); }
      else if (event.key === "Enter" && (target.tagName !== "TEXTAREA" || event.ctrlKey || event.metaKey)) {
        event.preventDefault(); submit();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const arrows = { "ArrowLeft": ["x", "left"], "ArrowRight": ["x", "right"], "ArrowDown": ["y", "tie"] };
    if (arrows[event.key]) {
      const [axis, choice] = arrows[event.key];
      if (!somethingScrolls(axis)) { event.preventDefault(); check("choice", choice); }
      return;
    }
    const actions = {
      "1": () => check("choice", "left"),
      "2": () => check("choice", "right"),
      "3": () => check("choice", "tie"),
      "q": () => check("strength", "slight"), "w": () => check("strength", "clear"),
      "e": () => check("strength", "decisive"),
      "Enter": submit,
      "s": () => click("skip-button"),
      "u": () => click("undo-button"),
      "r": () => focusFirst("table.rubric input"),
      "n": () => focusFirst("textarea[name=rationale]"),
      "?": () => { const keys = document.getElementById("keys"); if (keys) keys.hidden = !keys.hidden; },
    };
    const action = actions[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    if (action) { event.preventDefault(); action(); }
  });
})();
