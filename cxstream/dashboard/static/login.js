// Sign in with a user of the dashboard's users file; the session is an HttpOnly cookie.
"use strict";
document.querySelector("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = {user: document.querySelector("#user").value, password: document.querySelector("#password").value};
  const res = await fetch("/login", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
  if (res.ok) { location.href = "/"; return; }
  document.querySelector("#error").textContent = "wrong user or password";
});
