// Starts a Creem checkout for the chosen amount and goes there.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var error = document.getElementById("topup-error");
  function pay(cents) {
    error.textContent = "";
    window.blitz.api("POST", "/api/billing/topup", { amount_cents: cents }).then(function (a) {
      if (a.status === 201) { location.assign(a.body.checkout_url); return; }
      error.textContent = window.blitz.message(a);
    }).catch(function () { error.textContent = "We could not reach BlitzClaw. Check your connection."; });
  }
  document.querySelectorAll(".amount-choice").forEach(function (button) {
    button.addEventListener("click", function () { pay(parseInt(button.dataset.cents, 10)); });
  });
  document.getElementById("custom-amount").addEventListener("submit", function (event) {
    event.preventDefault();
    var dollars = Number(event.target.elements.dollars.value);
    if (!Number.isInteger(dollars) || dollars <= 0) {
      error.textContent = "Enter a whole number of dollars.";
      return;
    }
    pay(dollars * 100);
  });
});
