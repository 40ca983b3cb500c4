// After paying: waits (without reloading) until Creem's webhook has credited the top-up.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var box = document.getElementById("payment");
  var status = document.getElementById("payment-status");
  var detail = document.getElementById("payment-detail");
  var checkout = box.dataset.checkout;
  var tries = 0;
  function look() {
    tries += 1;
    window.blitz.api("GET", "/api/billing/topups?limit=20").then(function (a) {
      if (!a.ok) { detail.textContent = window.blitz.message(a); return; }
      var found = a.body.topups.filter(function (t) {
        return checkout ? t.checkout_id === checkout : true;
      })[0];
      if (found && found.status === "paid") {
        status.textContent = "Payment received: $" + (found.amount_cents / 100).toFixed(2) +
          " added to your balance.";
        detail.textContent = "Thank you! Your assistant is ready to use it.";
        box.classList.add("done");
        return;
      }
      if (tries < 120) { setTimeout(look, 1000); } else {
        detail.textContent = "Still waiting for the payment. It will show on your dashboard " +
          "once it arrives; if it does not within an hour, contact support.";
      }
    });
  }
  look();
});
