// The customer pages' small enhancements. Every page works without them: forms post, and a
// booking's page shows its news on reload.
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  // An error summary is read first: focus moves to it when the page loads (GOV.UK pattern).
  document.addEventListener("DOMContentLoaded", function () {
    var summary = document.querySelector("[data-error-summary]");
    if (summary) {
      summary.focus();
    }
  });

  // One submission per click of a form marked data-submit-once: its button is disabled while the
  // request is in flight. The server makes a retry harmless anyway (a quote books once), so the
  // button comes back after a while, in case the connection dropped and the page stayed.
  var RESUBMIT_AFTER_MS = 15000;

  function setBusy(form, busy) {
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      if (busy) {
        button.dataset.idleText = button.textContent;
        button.textContent = button.dataset.busyText || button.textContent;
      } else if (button.dataset.idleText) {
        button.textContent = button.dataset.idleText;
      }
      button.disabled = busy;
    });
    if (busy) {
      form.dataset.submitting = "true";
    } else {
      delete form.dataset.submitting;
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("[data-submit-once]")) {
      return;
    }
    if (form.dataset.submitting) {
      event.preventDefault();
      return;
    }
    form.dataset.submitting = "true";
    // The button changes after this handler, once the browser has taken the form's data.
    window.setTimeout(function () { setBusy(form, true); }, 0);
    window.setTimeout(function () { setBusy(form, false); }, RESUBMIT_AFTER_MS);
  });

  // A page restored from the back-forward cache gets its buttons back.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      document.querySelectorAll("form[data-submitting]").forEach(function (form) { setBusy(form, false); });
    }
  });

  // A booking's status poll (htmx): after a failed request htmx would stop polling, so ask again
  // after the server's Retry-After, or after a growing pause when there is none.
  document.addEventListener("htmx:afterRequest", function (event) {
    var poller = event.detail.elt;
    if (!poller.matches("[data-poller]") || event.detail.successful) {
      return;
    }
    var failures = Number(poller.dataset.failures || 0) + 1;
    poller.dataset.failures = String(failures);
    var retryAfter = parseInt(event.detail.xhr && event.detail.xhr.getResponseHeader("Retry-After"), 10);
    var seconds = retryAfter > 0 ? retryAfter : Math.min(60, 2 * failures);
    window.setTimeout(function () {
      if (document.body.contains(poller)) {
        window.htmx.trigger(poller, "poll-retry");
      }
    }, seconds * 1000);
  });
})();
