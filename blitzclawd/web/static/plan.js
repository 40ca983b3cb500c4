// The base plan: subscribing (a Creem checkout, then back to the dashboard, where the page waits
// for the subscription's webhook) and cancelling at the period's end (settings).
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var error = document.getElementById("plan-error");
  function say(text) { if (error) { error.textContent = text; } }
  var offline = "We could not reach BlitzClaw. Check your connection.";

  var subscribe = document.getElementById("subscribe");
  if (subscribe) {
    subscribe.addEventListener("click", function () {
      say("");
      subscribe.disabled = true;
      window.blitz.api("POST", "/api/billing/subscribe").then(function (a) {
        if (a.status === 201) { location.assign(a.body.checkout_url); return; }
        subscribe.disabled = false;
        say(window.blitz.message(a));
      }).catch(function () { subscribe.disabled = false; say(offline); });
    });
  }

  var pending = document.getElementById("plan-pending");
  if (pending) {
    var tries = 0;
    var poll = function () {
      window.blitz.api("GET", "/api/billing/balance").then(function (a) {
        var plan = a.ok && a.body.plan;
        if (plan && plan.status !== "canceled" && plan.status !== "expired") {
          location.replace("/dashboard");
          return;
        }
        tries += 1;
        if (tries < 60) { setTimeout(poll, 1000); } else {
          pending.textContent = "Your payment is still being confirmed: reload this page in a minute.";
        }
      });
    };
    poll();
  }

  var cancel = document.getElementById("cancel-plan");
  if (cancel) {
    cancel.addEventListener("click", function () {
      if (!window.confirm("Cancel the base plan? It stays until the end of the period you paid for, then ends.")) { return; }
      say("");
      cancel.disabled = true;
      window.blitz.api("DELETE", "/api/billing/subscribe").then(function (a) {
        if (!a.ok) { cancel.disabled = false; say(window.blitz.message(a)); return; }
        document.getElementById("plan-status").textContent = a.body.ends_at
          ? "Your base plan ends on " + a.body.ends_at.slice(0, 10) + "."
          : "Your base plan ends at the end of the period.";
        cancel.hidden = true;
      }).catch(function () { cancel.disabled = false; say(offline); });
    });
  }
});
