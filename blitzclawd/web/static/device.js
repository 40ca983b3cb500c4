document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var allow = document.getElementById("device-allow");
  if (!allow) { return; }
  allow.addEventListener("click", function () {
    allow.disabled = true;
    var code = document.getElementById("device").dataset.code;
    window.blitz.api("POST", "/api/auth/device/approve", { user_code: code }).then(function (a) {
      if (!a.ok) {
        document.getElementById("device-error").textContent = window.blitz.message(a);
        allow.disabled = false;
        return;
      }
      allow.hidden = true;
      document.getElementById("device-done").textContent =
        "Done: you can go back to your terminal.";
    });
  });
});
