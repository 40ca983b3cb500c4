"""The fake Clerk's frontend API: a stand-in for ClerkJS, for the dashboard's pages in a browser.

A page loads ClerkJS from ``<frontend API>/npm/@clerk/clerk-js@5/dist/clerk.browser.js`` with
``data-clerk-publishable-key``; this serves a script that behaves like it for what our pages
use: ``window.Clerk`` with ``load()``, ``mountSignIn(el, props)``, ``mountSignUp(el, props)``,
``user``, ``session.getToken()`` and ``signOut({redirectUrl})``. Its widget asks for an email
address and signs in (a new address signs up: the fake's Backend API knows the user from then
on, verified); like ClerkJS it keeps the session token in the ``__session`` cookie of the page's
own domain, so the daemon's pages and API see a signed-in browser exactly as with Clerk.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from blitzclawd.testing.fake_clerk import FakeClerk

SCRIPT_PATH = "/npm/@clerk/clerk-js@5/dist/clerk.browser.js"
SESSION_TTL = 3600  # the stand-in does not refresh its token: an hour covers any test

CLERK_JS = r"""(function () {
  "use strict";
  var base = new URL(document.currentScript.src).origin;
  function token() {
    var m = document.cookie.match(/(?:^|; )__session=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : null;
  }
  function claims(jwt) {
    try {
      var part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part));
    } catch (e) { return null; }
  }
  function signedIn(jwt, user) {
    document.cookie = "__session=" + encodeURIComponent(jwt) + "; path=/; SameSite=Lax";
    Clerk.session = { id: (claims(jwt) || {}).sid, getToken: function () {
      return Promise.resolve(token()); } };
    Clerk.user = user;
  }
  function widget(el, title, props) {
    props = props || {};
    while (el.firstChild) { el.removeChild(el.firstChild); }
    var form = document.createElement("form");
    form.className = "cl-card";
    form.setAttribute("data-clerk", "sign-in");
    var h = document.createElement("h2");
    h.textContent = title;
    var label = document.createElement("label");
    label.textContent = "Email address";
    var input = document.createElement("input");
    input.type = "email"; input.name = "identifier"; input.required = true;
    input.autocomplete = "email";
    label.appendChild(input);
    var button = document.createElement("button");
    button.type = "submit"; button.textContent = "Continue";
    var error = document.createElement("p");
    error.className = "cl-error"; error.setAttribute("role", "alert");
    form.appendChild(h); form.appendChild(label); form.appendChild(button);
    form.appendChild(error);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      fetch(base + "/v1/client/sign_ins", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ identifier: input.value, origin: location.origin })
      }).then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
        .then(function (answer) {
          if (answer[0] !== 200) { throw new Error(answer[1].errors[0].message); }
          signedIn(answer[1].jwt, answer[1].user);
          location.assign(props.forceRedirectUrl || props.fallbackRedirectUrl || "/");
        })
        .catch(function (e) { error.textContent = e.message; button.disabled = false; });
    });
    el.appendChild(form);
  }
  var Clerk = {
    loaded: false, user: null, session: null,
    publishableKey: document.currentScript.getAttribute("data-clerk-publishable-key"),
    load: function () {
      var jwt = token();
      var c = jwt && claims(jwt);
      if (c && c.exp * 1000 > Date.now()) { signedIn(jwt, { id: c.sub }); }
      Clerk.loaded = true;
      return Promise.resolve();
    },
    mountSignIn: function (el, props) { widget(el, "Sign in to BlitzClaw", props); },
    mountSignUp: function (el, props) { widget(el, "Create your account", props); },
    signOut: function (opts) {
      document.cookie = "__session=; path=/; max-age=0; SameSite=Lax";
      Clerk.user = null; Clerk.session = null;
      location.assign((opts && opts.redirectUrl) || "/");
      return Promise.resolve();
    }
  };
  window.Clerk = Clerk;
})();
"""


def user_id_for(email: str) -> str:
    """The same address is the same user, in every run."""
    return "user_" + hashlib.sha256(email.lower().encode()).hexdigest()[:24]


def _cors(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    return response


def add_frontend_routes(app: web.Application, clerk: FakeClerk) -> None:
    async def script(request: web.Request) -> web.Response:
        # Served to any origin, as Clerk's CDN does (pages load it with crossorigin).
        return _cors(web.Response(text=CLERK_JS, content_type="application/javascript"))

    async def preflight(request: web.Request) -> web.StreamResponse:
        return _cors(web.Response(status=204))

    async def sign_in(request: web.Request) -> web.StreamResponse:
        try:
            body: Any = json.loads(await request.text())
        except ValueError:
            body = None
        email = body.get("identifier") if isinstance(body, dict) else None
        origin = body.get("origin") if isinstance(body, dict) else None
        if not isinstance(email, str) or "@" not in email or not isinstance(origin, str):
            error = {"code": "form_identifier_invalid", "message": "Enter a valid email address."}
            return _cors(web.json_response({"errors": [error]}, status=422))
        user_id = user_id_for(email)
        if user_id not in clerk.users:
            clerk.add_user(user_id, email)  # a sign-up: verified, as after Clerk's email code
        clerk.sign_ins.append(email)
        jwt = clerk.mint(user_id, ttl=SESSION_TTL, azp=origin)
        return _cors(web.json_response({"jwt": jwt, "user": {"id": user_id, "email": email}}))

    app.router.add_get(SCRIPT_PATH, script)
    app.router.add_route("OPTIONS", "/v1/client/sign_ins", preflight)
    app.router.add_post("/v1/client/sign_ins", sign_in)
