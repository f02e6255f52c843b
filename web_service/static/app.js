// Progressive enhancement only: every page works without it. Enables a "send the code
// again" button when its cooldown is over, so the visitor need not reload the page.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var wait = document.getElementById("resend-wait");
  var button = document.getElementById("resend-button");
  if (!wait || !button) return;
  var seconds = parseInt(wait.getAttribute("data-wait"), 10);
  if (!(seconds > 0)) return;
  window.setTimeout(function () {
    button.disabled = false;
    wait.textContent = wait.getAttribute("data-ready");
  }, seconds * 1000);
});
