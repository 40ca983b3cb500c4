// Linking WhatsApp: the QR code shown, kept current as WhatsApp rotates it (a long poll that
// answers when it changes), until the phone has scanned it: "connected as +…".
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var box = document.getElementById("instance");
  var section = document.getElementById("whatsapp");
  var base = "/api/instances/" + box.dataset.id + "/whatsapp/";
  var state = document.getElementById("whatsapp-state");
  var error = document.getElementById("whatsapp-error");
  var link = document.getElementById("whatsapp-link");
  var figure = document.getElementById("whatsapp-qr-box");
  var img = document.getElementById("whatsapp-qr");
  var shown = null;
  var unlink = document.getElementById("whatsapp-unlink");
  unlink.addEventListener("click", function () {
    if (!window.confirm("Unlink WhatsApp? Your assistant stops answering on this number.")) { return; }
    window.blitz.api("POST", base + "disconnect", {}).then(function (a) {
      if (!a.ok) { error.textContent = window.blitz.message(a); return; }
      unlink.hidden = true; link.hidden = false; section.classList.remove("done");
      state.textContent = "WhatsApp disconnected. Scan QR to reconnect.";
    });
  });
  function connected(answer) {
    figure.hidden = true;
    link.hidden = true;
    unlink.hidden = false;
    var phone = String(answer.phone || "");
    if (phone && phone.charAt(0) !== "+") { phone = "+" + phone; }
    state.textContent = "Connected as " + phone + ". Your assistant answers on WhatsApp now.";
    section.classList.add("done");
  }
  function show(answer) {
    if (answer.status === "connected") { connected(answer); return false; }
    if (answer.png_data_url) {
      img.src = answer.png_data_url;
      shown = answer.id;
      figure.hidden = false;
      state.textContent = "Scan this code with WhatsApp on your phone.";
    }
    return answer.status === "waiting_for_scan";
  }
  function follow(rounds) {
    if (rounds <= 0) {
      state.textContent = "The code expired. Show a new one when you are ready.";
      figure.hidden = true; link.hidden = false; return;
    }
    window.blitz.api("GET", base + "qr?wait=1&since=" + encodeURIComponent(shown || ""))
      .then(function (a) {
        if (!a.ok) { error.textContent = window.blitz.message(a); link.hidden = false; return; }
        if (show(a.body)) { follow(rounds - 1); }
      });
  }
  link.addEventListener("click", function () {
    error.textContent = "";
    link.hidden = true;
    state.textContent = "Asking WhatsApp for a code…";
    window.blitz.api("POST", base + "login", {}).then(function (a) {
      if (!a.ok) { error.textContent = window.blitz.message(a); link.hidden = false; return; }
      if (show(a.body)) { follow(40); }
    });
  });
  var waits = 0;
  function ready() {
    if (box.dataset.status !== "active") {
      waits += 1;
      if (waits < 900) { setTimeout(ready, 2000); }
      return;
    }
    section.hidden = false;
    window.blitz.api("GET", base + "status").then(function (a) {
      if (a.ok && a.body.status === "connected") { connected(a.body); }
      else if (a.ok && a.body.status === "logged_out") {
        state.textContent = "WhatsApp disconnected. Scan QR to reconnect.";
      } else { state.textContent = "Not linked yet."; }
    });
  }
  ready();
});
