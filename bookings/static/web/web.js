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
  // aria-live regions. The stream announces a version once: a refresh that fails (the web
  // process restarting, a 503) is retried, by the same rule as a failed poll, until the page
  // shows what was announced. The booking page's htmx poll is the fallback: kept aside while the
  // stream works, started when the browser has no EventSource or the stream keeps failing.
  var STREAM_FAILURES_BEFORE_POLLING = 3;

  // The pause before asking again after a request that failed (or a refresh that left the page
  // behind): the answer's Retry-After, else a pause that grows with each try in a row, up to a
  // minute.
  function retryPauseMs(xhr, failures) {
    var retryAfter = parseInt(xhr && xhr.getResponseHeader("Retry-After"), 10);
    return 1000 * (retryAfter > 0 ? retryAfter : Math.min(60, 2 * failures));
  }

  function statusTag(reference) {
    return document.querySelector('[data-status-version][data-reference="' + reference + '"]');
  }

  function shownVersion(reference) {
    var tag = statusTag(reference);
    return tag ? Number(tag.dataset.statusVersion) : 0;
  }

  function followLive(live) {
    if (!window.EventSource) {
      return; // the poll, as rendered, carries on
    }
    // Kept aside before htmx sees it: while the stream works, nothing polls. Each answer to the
    // progress page's refresh ends with the next poller, asking from the version it brought (or
    // none once nothing more is awaited): that one is kept instead, so that a poll that takes
    // over asks from what the page shows and its live region announces only news.
    var poller = document.getElementById("booking-poller");
    if (poller) {
      poller.remove();
    }
    var wanted = {}; // reference the page shows -> newest status_version the stream announced
    // A reference the page does not show -> its announced version: a new booking belongs on the
    // first page of my bookings, one on another page does not. One answer settles it either way.
    var unseen = {};
    var refreshing = null;
    var answer = null; // the refresh's request, as htmx reported it
    var retries = 0;
    var retryTimer = null;

    live.addEventListener("htmx:afterRequest", function (event) {
      answer = event.detail;
    });

    function behind() {
      return Object.keys(wanted).some(function (reference) {
        return wanted[reference] > shownVersion(reference);
      });
    }

    function pending() {
      return behind() || Object.keys(unseen).length > 0;
    }

    function refresh() {
      // Nothing to do while a refresh is on its way (it retries if it comes back behind), or
      // once an earlier one already brought what was announced: a late retry must not clear the
      // news a newer refresh just gave.
      window.clearTimeout(retryTimer);
      if (refreshing || !pending()) {
        return;
      }
      var before = {}; // reference -> the version shown when asked
      Object.keys(wanted).concat(Object.keys(unseen)).forEach(function (reference) {
        before[reference] = shownVersion(reference);
      });
      var asked = unseen;
      unseen = {};
      answer = null;
      var options = live.dataset.liveTarget
        ? { source: live, target: live.dataset.liveTarget, select: live.dataset.liveTarget, swap: "outerHTML" }
        : { source: live, swap: "none" }; // the answer swaps its parts in by their ids (out of band)
      var done = function () {
        settled(before, asked);
      };
      refreshing = window.htmx.ajax("GET", live.dataset.liveRefresh, options).then(done, done);
    }

    function settled(before, asked) {
      refreshing = null;
      if (answer && answer.successful) {
        Object.keys(wanted).forEach(function (reference) {
          if (!statusTag(reference)) {
            delete wanted[reference]; // no longer on this page
          }
        });
        if (!live.dataset.liveTarget) {
          keepNextPoller(answer.xhr.responseText);
        }
        if (live.dataset.liveAnnounce) {
          announce(Object.keys(before).filter(function (reference) {
            return shownVersion(reference) > before[reference];
          }));
        }
      } else {
        // Unanswered (a 503, a dropped connection): what it was asked for is still to ask.
        Object.keys(asked).forEach(function (reference) {
          unseen[reference] = Math.max(unseen[reference] || 0, asked[reference]);
        });
      }
      Object.keys(wanted).forEach(function (reference) {
        if (shownVersion(reference) >= wanted[reference]) {
          delete wanted[reference];
        }
      });
      if (pending()) {
        retries += 1;
        retryTimer = window.setTimeout(refresh, retryPauseMs(answer && answer.xhr, retries));
      } else {
        retries = 0;
      }
    }

    function keepNextPoller(html) {
      poller = new window.DOMParser().parseFromString(html, "text/html").getElementById("booking-poller");
    }

    function announce(references) {
      if (references.length === 0) {
        return; // nothing new: the region keeps what it last said
      }
      document.getElementById(live.dataset.liveAnnounce).textContent = references.map(function (reference) {
        return "Booking " + reference + ": " + statusTag(reference).textContent.trim() + ".";
      }).join(" ");
    }

    function startPolling() {
      if (poller && !document.getElementById("booking-poller")) {
        live.parentNode.insertBefore(poller, live);
        window.htmx.process(poller);
        // The poll asks from the version shown: it brings whatever a refresh was still after.
        wanted = {};
        window.clearTimeout(retryTimer);
      }
    }

    var source = new window.EventSource(live.dataset.liveStream);
    var failures = 0;
    source.addEventListener("open", function () {
      failures = 0;
    });
    source.addEventListener("status", function (event) {
      var view = JSON.parse(event.data);
      if (!statusTag(view.reference)) {
        unseen[view.reference] = Math.max(unseen[view.reference] || 0, view.status_version);
      } else if (view.status_version > shownVersion(view.reference)) {
        wanted[view.reference] = Math.max(wanted[view.reference] || 0, view.status_version);
      } else {
        return;
      }
      window.setTimeout(refresh, 0); // a burst of events makes one request
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
  // after `retryPauseMs`.
  document.addEventListener("htmx:afterRequest", function (event) {
    var poller = event.detail.elt;
    if (!poller.matches("[data-poller]") || event.detail.successful) {
      return;
    }
    var failures = Number(poller.dataset.failures || 0) + 1;
    poller.dataset.failures = String(failures);
    window.setTimeout(function () {
      if (document.body.contains(poller)) {
        window.htmx.trigger(poller, "poll-retry");
      }
    }, retryPauseMs(event.detail.xhr, failures));
  });
})();
