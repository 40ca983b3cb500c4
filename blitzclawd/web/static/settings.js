document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var keyError = document.getElementById("key-error");
  document.getElementById("new-key").addEventListener("submit", function (event) {
    event.preventDefault();
    keyError.textContent = "";
    var name = event.target.elements.name.value;
    window.blitz.api("POST", "/api/auth/api-keys", { name: name }).then(function (a) {
      if (a.status !== 201) { keyError.textContent = window.blitz.message(a); return; }
      document.getElementById("new-key-value").textContent = a.body.key;
      document.getElementById("new-key-shown").hidden = false;
      var li = document.createElement("li");
      li.textContent = a.body.name + " (" + a.body.prefix + "…) — just made";
      document.getElementById("keys").appendChild(li);
      event.target.reset();
    });
  });
  document.querySelectorAll("button.revoke").forEach(function (button) {
    button.addEventListener("click", function () {
      if (!window.confirm("Revoke this key? Anything using it stops working.")) { return; }
      window.blitz.api("DELETE", "/api/auth/api-keys/" + button.dataset.key).then(function (a) {
        if (!a.ok) { keyError.textContent = window.blitz.message(a); return; }
        button.closest("li").remove();
      });
    });
  });
  var auto = document.getElementById("auto-topup");
  auto.addEventListener("submit", function (event) {
    event.preventDefault();
    document.getElementById("auto-error").textContent = "";
    document.getElementById("auto-saved").textContent = "";
    var enabled = auto.elements.enabled.checked;
    var body = { enabled: enabled };
    if (enabled) {
      body.threshold_cents = Math.round(Number(auto.elements.threshold.value) * 100);
      body.amount_cents = Math.round(Number(auto.elements.amount.value) * 100);
    }
    window.blitz.api("PATCH", "/api/billing/auto-topup", body).then(function (a) {
      if (!a.ok) { document.getElementById("auto-error").textContent = window.blitz.message(a); return; }
      document.getElementById("auto-saved").textContent = enabled ? "Saved: automatic top-ups are on." : "Saved: automatic top-ups are off.";
    });
  });
});
