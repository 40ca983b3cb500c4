// One assistant: its status kept current while it is being set up, its actions, pairing.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var box = document.getElementById("instance");
  var id = box.dataset.id;
  var error = document.getElementById("action-error");
  var words = { waiting_for_channel: "Waiting for its channel", pending: "Setting up",
                provisioning: "Setting up", active: "Active", paused: "Paused",
                stopped: "Stopped", error: "Needs attention" };
  function show(instance) {
    var badge = document.getElementById("status");
    badge.textContent = words[instance.status] || instance.status;
    badge.className = "badge status-" + instance.status;
    document.getElementById("status-reason").textContent = instance.status_reason || "";
    document.getElementById("progress").hidden =
      ["pending", "provisioning"].indexOf(instance.status) < 0;
    box.dataset.status = instance.status;
  }
  var polls = 0;
  function poll() {
    window.blitz.api("GET", "/api/instances/" + id).then(function (a) {
      if (a.ok) { show(a.body); }
      polls += 1;
      if (["pending", "provisioning"].indexOf(box.dataset.status) >= 0 && polls < 900) {
        setTimeout(poll, 2000);
      } else if (box.dataset.status === "active") { pairing(); }
    });
  }
  function pairing() {
    window.blitz.api("GET", "/api/instances/" + id + "/pairing").then(function (a) {
      if (!a.ok) { return; }
      var list = document.getElementById("pairing-requests");
      list.textContent = "";
      a.body.requests.forEach(function (r) {
        var li = document.createElement("li");
        li.textContent = (r.name || r.username || r.sender_id) + " · code " + r.code + " ";
        var approve = document.createElement("button");
        approve.type = "button"; approve.textContent = "Approve";
        approve.addEventListener("click", function () {
          window.blitz.api("POST", "/api/instances/" + id + "/pairing/approve", { code: r.code })
            .then(function (done) {
              if (done.ok) { li.textContent = "Approved: " + li.textContent; }
              else { error.textContent = window.blitz.message(done); }
            });
        });
        li.appendChild(approve);
        list.appendChild(li);
      });
      document.getElementById("pairing").hidden = a.body.requests.length === 0;
    });
  }
  box.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var action = button.dataset.action;
      error.textContent = "";
      if (action === "delete" && !window.confirm(
        "Delete this assistant and its server? Its conversations and memory are gone for good.")) {
        return;
      }
      var call = action === "delete"
        ? window.blitz.api("DELETE", "/api/instances/" + id)
        : window.blitz.api("POST", "/api/instances/" + id + "/" + action);
      call.then(function (a) {
        if (!a.ok) { error.textContent = window.blitz.message(a); return; }
        if (action === "delete") { location.assign("/dashboard"); return; }
        poll();
      });
    });
  });
  poll();
});
