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

  // Book's Idempotency-Key: made here for the attempt to book a quote (form[data-attempt]) and
  // kept in the tab's sessionStorage under that attempt, so that a double click, a reload, a
  // retry after a dropped connection all send the same key. Without it (no script, no
  // crypto.randomUUID outside a secure context) the field stays empty and the server keys the
  // attempt by the quote; either way the server books a quote once.
  document.querySelectorAll("form[data-attempt]").forEach(function (form) {
    var field = form.querySelector("[data-attempt-key]");
    var name = "attempt-key:" + form.dataset.attempt;
    var key = null;
    try {
      key = window.sessionStorage.getItem(name);
    } catch (error) {
      // storage refused (a private mode): a key for this page only
    }
    if (!key && window.crypto && window.crypto.randomUUID) {
      key = window.crypto.randomUUID();
      try {
        window.sessionStorage.setItem(name, key);
      } catch (error) {
        // as above
      }
    }
    if (field && key) {
      field.value = key;
    }
  });

  // A page restored from the back-forward cache gets its buttons back.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      document.querySelectorAll("form[data-submitting]").forEach(function (form) { setBusy(form, false); });
    }
  });

  // Live status: a page with a [data-live-stream] element follows its booking(s) on that Server-
  // Sent Events stream (same origin, so the session cookie goes with it). Each event carries a
  // booking's reference and status_version; when it is newer than what the page shows (the
  // [data-status-version] of that reference), the page fetches its live parts again
  // (data-live-refresh, rendered by the server as on a reload) and swaps them in, inside their
  // aria-live regions. The booking page's htmx poll is the fallback: kept aside while the stream
  // works, started when the browser has no EventSource or the stream keeps failing.
  var STREAM_FAILURES_BEFORE_POLLING = 3;
  var REFRESH_RETRIES = 3;

  function shownVersion(reference) {
    var shown = document.querySelector('[data-status-version][data-reference="' + reference + '"]');
    return shown ? Number(shown.dataset.statusVersion) : 0;
  }

  function followLive(live) {
    var poller = document.getElementById("booking-poller");
    if (!window.EventSource) {
      return; // the poll, as rendered, carries on
    }
    // Kept aside before htmx sees it: while the stream works, nothing polls.
    var pollerPlace = poller && { parent: poller.parentNode, next: poller.nextSibling };
    if (poller) {
      poller.remove();
    }
    var wanted = {}; // reference -> newest status_version the stream announced
    var refreshing = null;
    var retries = 0;
    var retryTimer = null;

    function behind() {
      return Object.keys(wanted).some(function (reference) {
        return wanted[reference] > shownVersion(reference);
      });
    }

    function refresh() {
      // Nothing to do while a refresh is on its way (it retries if it comes back behind), or
      // once an earlier one already brought what was announced: a late retry must not clear the
      // news a newer refresh just gave.
      window.clearTimeout(retryTimer);
      if (refreshing || !behind()) {
        return;
      }
      var options = live.dataset.liveTarget
        ? { source: live, target: live.dataset.liveTarget, select: live.dataset.liveTarget, swap: "outerHTML" }
        : { source: live, swap: "none" }; // the answer swaps its parts in by their ids (out of band)
      // A failed request (the network dropped) settles the same way: still behind, so it retries.
      refreshing = window.htmx.ajax("GET", live.dataset.liveRefresh, options).then(settled, settled);
    }

    function settled() {
      refreshing = null;
      if (live.dataset.liveAnnounce) {
        announce();
      }
      if (behind() && retries < REFRESH_RETRIES) {
        retries += 1;
        retryTimer = window.setTimeout(refresh, 1000 * retries);
      } else {
        retries = 0;
        wanted = {};
      }
    }

    function announce() {
      var region = document.getElementById(live.dataset.liveAnnounce);
      var news = Object.keys(wanted).map(function (reference) {
        var tag = document.querySelector('[data-status-version][data-reference="' + reference + '"]');
        return tag ? "Booking " + reference + ": " + tag.textContent.trim() + "." : "";
      });
      region.textContent = news.filter(Boolean).join(" ");
    }

    function startPolling() {
      if (pollerPlace && !document.getElementById("booking-poller")) {
        pollerPlace.parent.insertBefore(poller, pollerPlace.next);
        window.htmx.process(poller);
      }
    }

    var source = new window.EventSource(live.dataset.liveStream);
    var failures = 0;
    source.addEventListener("open", function () {
      failures = 0;
    });
    source.addEventListener("status", function (event) {
      var view = JSON.parse(event.data);
      if (view.status_version > shownVersion(view.reference)) {
        wanted[view.reference] = Math.max(wanted[view.reference] || 0, view.status_version);
        window.setTimeout(refresh, 0); // a burst of events makes one request
      }
    });
    source.addEventListener("error", function () {
      // The browser reconnects by itself (after the stream's retry:) unless the server refused;
      // a stream that keeps failing leaves the page to its poll.
      failures += 1;
      if (source.readyState === window.EventSource.CLOSED || failures >= STREAM_FAILURES_BEFORE_POLLING) {
        source.close();
        startPolling();
      }
    });
  }

  document.querySelectorAll("[data-live-stream]").forEach(followLive);

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
