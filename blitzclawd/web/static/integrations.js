document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var error = document.getElementById("integration-error");
  var status = document.getElementById("integration-status");
  var connect = document.getElementById("google-connect");
  if (connect) {
    connect.addEventListener("click", function () {
      error.textContent = "";
      connect.disabled = true;
      window.blitz.api("POST", "/api/integrations/google/connect").then(function (a) {
        if (!a.ok) { connect.disabled = false; error.textContent = window.blitz.message(a); return; }
        window.location.assign(a.body.url);
      });
    });
  }
  var remove = document.getElementById("google-remove");
  if (remove) {
    remove.addEventListener("click", function () {
      if (!window.confirm("Remove Google access? Your assistants can no longer read your mail or calendar.")) { return; }
      error.textContent = "";
      remove.disabled = true;
      window.blitz.api("DELETE", "/api/integrations/google").then(function (a) {
        if (!a.ok) { remove.disabled = false; error.textContent = window.blitz.message(a); return; }
        window.location.assign("/settings/integrations");
      });
    });
  }
  document.querySelectorAll("input.attach").forEach(function (box) {
    box.addEventListener("change", function () {
      error.textContent = "";
      status.textContent = "";
      var action = box.checked ? "attach" : "detach";
      box.disabled = true;
      window.blitz.api("POST", "/api/instances/" + box.dataset.instance + "/integrations/" + action,
        { integration_id: box.dataset.integration }).then(function (a) {
        box.disabled = false;
        if (!a.ok) { box.checked = !box.checked; error.textContent = window.blitz.message(a); return; }
        status.textContent = box.checked ? "Attached: the assistant gets the access shortly." : "Detached.";
      });
    });
  });
});
