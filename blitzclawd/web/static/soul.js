// The persona editor: a live count of the whole SOUL.md (template + additions) against
// OpenClaw's limit; saving queues the change for the assistant's server.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var box = document.getElementById("soul");
  var text = document.getElementById("soul-text");
  var base = Number(box.dataset.templateLength);
  var max = Number(box.dataset.max);
  var count = document.getElementById("soul-count");
  function recount() {
    var n = base + text.value.length;
    count.textContent = n;
    count.className = n > max ? "error" : "";
  }
  text.addEventListener("input", recount);
  recount();
  document.getElementById("save-soul").addEventListener("click", function () {
    var error = document.getElementById("soul-error");
    var saved = document.getElementById("soul-saved");
    error.textContent = ""; saved.textContent = "";
    var value = text.value.trim() ? text.value : null;
    window.blitz.api("POST", "/api/instances/" + box.dataset.id + "/configure", { soul_md: value })
      .then(function (a) {
        if (!a.ok) { error.textContent = window.blitz.message(a); return; }
        saved.textContent = a.body.queued
          ? "Saved. Your assistant picks it up in a moment."
          : "Saved. Your assistant uses it once it is set up.";
      });
  });
});
