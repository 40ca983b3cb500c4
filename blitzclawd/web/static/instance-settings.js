// An assistant's settings on its page: the channel's settings (secrets write-only), the user's
// own provider key, and the gateway's live log (streamed, the last 200 KB kept on the page).
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var id = document.getElementById("instance").dataset.id;
  var base = "/api/instances/" + id;
  var channel = document.getElementById("channel-form");
  if (channel) {
    channel.addEventListener("submit", function (event) {
      event.preventDefault();
      var error = document.getElementById("channel-error");
      var saved = document.getElementById("channel-saved");
      error.textContent = ""; saved.textContent = "";
      channel.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
      var config = {};
      channel.querySelectorAll("input").forEach(function (input) {
        var value = input.value.trim();
        if (!value) { return; }  // left empty: the stored value stays (a token is never re-sent)
        config[input.name] = input.dataset.kind === "string_list"
          ? value.split(/[\s,]+/).filter(Boolean) : value;
      });
      window.blitz.api("POST", base + "/channel", { channel_config: config }).then(function (a) {
        if (a.ok) { saved.textContent = "Saved. Your assistant picks it up in a moment."; return; }
        var field = a.body && a.body.error && a.body.error.field;
        var slot = field && channel.querySelector("[data-error-for='" + field + "']");
        (slot || error).textContent = window.blitz.message(a);
      });
    });
  }
  var own = document.getElementById("own-key-form");
  var ownError = document.getElementById("own-key-error");
  own.addEventListener("submit", function (event) {
    event.preventDefault();
    ownError.textContent = "";
    var body = { provider: own.elements.provider.value, api_key: own.elements.api_key.value };
    window.blitz.api("POST", base + "/api-key", body).then(function (a) {
      if (!a.ok) { ownError.textContent = window.blitz.message(a); return; }
      own.elements.api_key.value = "";
      document.getElementById("own-key-state").textContent =
        "Your assistant uses your own key: its usage is billed by your provider, not from your balance.";
    });
  });
  var remove = document.getElementById("own-key-remove");
  if (remove) {
    remove.addEventListener("click", function () {
      window.blitz.api("DELETE", base + "/api-key").then(function (a) {
        if (!a.ok) { ownError.textContent = window.blitz.message(a); return; }
        document.getElementById("own-key-state").textContent =
          "Your assistant uses BlitzClaw's metered access (no key needed).";
        remove.hidden = true;
      });
    });
  }
  var logs = document.getElementById("logs");
  var start = document.getElementById("logs-start");
  var stop = document.getElementById("logs-stop");
  var controller = null;
  start.addEventListener("click", function () {
    document.getElementById("logs-error").textContent = "";
    controller = new AbortController();
    logs.hidden = false; start.hidden = true; stop.hidden = false;
    fetch(base + "/logs?follow=1&lines=200", { credentials: "same-origin", signal: controller.signal })
      .then(function (response) {
        if (!response.ok) {
          return response.json().then(function (body) {
            throw new Error(window.blitz.message({ status: response.status, body: body }));
          });
        }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        function read() {
          return reader.read().then(function (part) {
            if (part.done) { return; }
            logs.textContent = (logs.textContent + decoder.decode(part.value, { stream: true }))
              .slice(-200000);
            logs.scrollTop = logs.scrollHeight;
            return read();
          });
        }
        return read();
      })
      .catch(function (e) {
        if (e.name !== "AbortError") { document.getElementById("logs-error").textContent = e.message; }
      })
      .then(function () { start.hidden = false; stop.hidden = true; });
  });
  stop.addEventListener("click", function () { if (controller) { controller.abort(); } });
});
