// Mounts Clerk's own sign-in (or sign-up) widget; Clerk keeps the session in the __session cookie.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var el = document.getElementById("clerk-widget");
  if (!el || !window.Clerk) { return; }
  window.Clerk.load().then(function () {
    var props = {
      forceRedirectUrl: el.dataset.redirect,
      signInUrl: "/sign-in",
      signUpUrl: "/sign-up"
    };
    if (el.dataset.mode === "sign-up") {
      window.Clerk.mountSignUp(el, props);
    } else {
      window.Clerk.mountSignIn(el, props);
    }
  });
});
