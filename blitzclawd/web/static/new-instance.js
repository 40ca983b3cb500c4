// The new-assistant wizard: the channel's settings checked with its service first (a wrong bot
// token is said right away, under its field), then the assistant created.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var form = document.getElementById("new-instance");
  var formError = document.getElementById("form-error");
  var soul = form.elements.soul_md;
  function selected(name) { return form.querySelector("input[name=" + name + "]:checked").value; }
  function refresh() {
    document.getElementById("soul-editor").hidden = selected("persona_template") !== "custom";
    form.querySelectorAll(".channel-fields").forEach(function (box) {
      box.hidden = box.dataset.channel !== selected("channel_type");
    });
  }
  form.addEventListener("change", refresh);
  soul.addEventListener("input", function () {
    document.getElementById("soul-count").textContent = soul.value.length;
  });
  function showError(answer) {
    if (answer.status === 402) {
      formError.textContent = window.blitz.message(answer) + " ";
      var link = document.createElement("a");
      link.href = "/dashboard/topup"; link.textContent = "Top up now";
      formError.appendChild(link);
      return;
    }
    var field = answer.body && answer.body.error && answer.body.error.field;
    var slot = field && form.querySelector("[data-error-for='" + field + "']");
    if (slot && !slot.closest("[hidden]")) { slot.textContent = window.blitz.message(answer); }
    else { formError.textContent = window.blitz.message(answer); }
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    formError.textContent = "";
    form.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
    var channel = selected("channel_type");
    var config = {};
    form.querySelectorAll(".channel-fields[data-channel='" + channel + "'] input").forEach(
      function (input) {
        var value = input.value.trim();
        if (!value) { return; }
        config[input.name] = input.dataset.kind === "string_list"
          ? value.split(/[\s,]+/).filter(Boolean) : value;
      });
    var body = { channel_type: channel, persona_template: selected("persona_template"),
                 channel_config: config };
    if (body.persona_template === "custom") { body.soul_md = soul.value; }
    var button = document.getElementById("create");
    button.disabled = true;
    window.blitz.api("POST", "/api/channels/" + channel + "/validate", { channel_config: config })
      .then(function (checked) {
        if (checked.status !== 200) {
          showError(checked); button.disabled = false; return null;
        }
        return window.blitz.api("POST", "/api/instances", body);
      })
      .then(function (made) {
        if (!made) { return; }
        if (made.status === 201) { location.assign("/instances/" + made.body.id); return; }
        showError(made); button.disabled = false;
      })
      .catch(function () {
        formError.textContent = "We could not reach BlitzClaw. Check your connection.";
        button.disabled = false;
      });
  });
  // A secret setting (a bot token) is checked as soon as it is pasted: the bot's name, or why not.
  form.querySelectorAll(".channel-fields input[type=password]").forEach(function (input) {
    input.addEventListener("change", function () {
      var box = input.closest(".channel-fields");
      var slot = form.querySelector("[data-error-for='" + input.dataset.field + "']");
      var ok = box.querySelector(".field-ok");
      if (!ok) {
        ok = document.createElement("span");
        ok.className = "field-ok small";
        slot.parentNode.insertBefore(ok, slot);
      }
      // Messages change only once the answer is in: nothing moves under a finger or a pointer
      // that is on its way to the button below.
      if (!input.value.trim()) { slot.textContent = ""; ok.textContent = ""; return; }
      var config = {};
      config[input.name] = input.value.trim();
      window.blitz.api("POST", "/api/channels/" + box.dataset.channel + "/validate",
                       { channel_config: config }).then(function (a) {
        if (a.ok) {
          var name = a.body.channel_config.bot_username;
          slot.textContent = "";
          ok.textContent = name ? "✓ This is @" + name + "." : "✓ That works.";
        } else { ok.textContent = ""; slot.textContent = window.blitz.message(a); }
      });
    });
  });
  refresh();
});
