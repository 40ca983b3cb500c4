// The dashboard's few lines of shared JavaScript: calling the JSON API from a page (the session
// cookie goes along; the API checks that the call comes from this site) and showing its errors.
(function () {
  "use strict";
  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { status: response.status, ok: response.ok, body: data };
      });
    });
  }
  // The spec's words for what users meet most ("Error Handling"); the API's own message else.
  function message(answer) {
    var error = (answer.body && answer.body.error) || {};
    if (answer.status === 401) { return "Your session has ended: sign in again."; }
    if (answer.status === 402) { return "Top up to continue using your assistant."; }
    if (answer.status === 422 && error.field === "channel_config.bot_token") {
      return "This token doesn't work. Check BotFather and try again.";
    }
    if (answer.body && answer.body.error) { return answer.body.error.message; }
    return "Something went wrong (" + answer.status + "). Please try again.";
  }
  window.blitz = { api: api, message: message };
})();
