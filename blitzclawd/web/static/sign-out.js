document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  if (window.Clerk) {
    window.Clerk.load().then(function () { return window.Clerk.signOut({ redirectUrl: "/" }); });
  } else {
    document.cookie = "__session=; path=/; max-age=0; SameSite=Lax";
    location.assign("/");
  }
});
