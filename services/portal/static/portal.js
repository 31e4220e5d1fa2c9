// Small improvements on pages that work without script.
"use strict";

// "Send again" waits for the cooldown the server stated (data-wait-until, ISO time).
document.querySelectorAll("[data-wait-until]").forEach(function (button) {
  var until = Date.parse(button.getAttribute("data-wait-until"));
  if (isNaN(until)) { return; }
  var label = button.textContent;
  function tick() {
    var left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      button.disabled = true;
      button.textContent = label + " (" + left + " s)";
      window.setTimeout(tick, 1000);
    } else {
      button.disabled = false;
      button.textContent = label;
    }
  }
  tick();
});

// Buttons that print the page (recovery codes to keep).
document.querySelectorAll("[data-print]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () { window.print(); });
});

// A form with data-confirm asks before it posts (delete, disable). Once the dialog said yes,
// its data-confirmed field says so, and the server skips the page that would ask again.
document.querySelectorAll("form[data-confirm]").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); return; }
    form.querySelectorAll("input[data-confirmed]").forEach(function (input) { input.value = "ja"; });
  });
});

// The invoice format form shows only the chosen format's fields (without script, all of them).
document.querySelectorAll("form.invoice-format").forEach(function (form) {
  function show() {
    var chosen = form.querySelector('input[name="format"]:checked');
    form.querySelectorAll("[data-format-fields]").forEach(function (fields) {
      fields.hidden = !chosen || fields.getAttribute("data-format-fields") !== chosen.value;
    });
  }
  form.querySelectorAll('input[name="format"]').forEach(function (radio) {
    radio.addEventListener("change", show);
  });
  show();
});
