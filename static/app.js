// handraise pages: ticking clocks, the tab title, the new-hand alert, the `n` shortcut,
// and the 5-second poll that keeps a dashboard current while its live stream is down.
// No inline script anywhere (CSP script-src 'self'); htmx does the rest.
(function () {
  "use strict";

  var offset = 0; // server clock minus this browser's clock, from the latest fragment

  function syncClock(root) {
    var el = root && root.querySelector ? root.querySelector("[data-server-now]") : null;
    if (el) offset = Number(el.getAttribute("data-server-now")) - Date.now();
  }

  function clock(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
  }

  function tick() {
    var now = Date.now() + offset;
    document.querySelectorAll("time.tick[data-since]").forEach(function (t) {
      t.textContent = clock(now - Number(t.getAttribute("data-since")));
    });
    // Offers that lapse (the Undo of "Lower all hands"): gone at their server time.
    document.querySelectorAll("[data-expires-at]").forEach(function (el) {
      if (now >= Number(el.getAttribute("data-expires-at"))) el.hidden = true;
    });
    // An invitation's seconds left, and "over time" once a speaking limit passes.
    document.querySelectorAll("time.countdown[data-until]").forEach(function (t) {
      t.textContent = Math.max(0, Math.ceil((Number(t.getAttribute("data-until")) - now) / 1000)) + " s";
    });
    document.querySelectorAll(".over-time[data-from]").forEach(function (el) {
      if (now >= Number(el.getAttribute("data-from"))) el.hidden = false;
    });
  }

  // --- tab title and the new-hand alert ---------------------------------------------
  var seenHands = null;
  var ALERT_KEY = "handraise.alert";

  function alertOn() {
    return localStorage.getItem(ALERT_KEY) !== "off";
  }

  function tone() {
    try {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      var ctx = tone.ctx || (tone.ctx = new Ctx());
      var osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, ctx.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.35);
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.4);
    } catch (e) { /* no audio: the flash still shows */ }
  }

  function onQueue() {
    var q = document.querySelector("#queue [data-hands]");
    if (!q) return;
    var n = Number(q.getAttribute("data-hands") || 0);
    var base = document.body.getAttribute("data-title") || document.title;
    document.title = n ? "(" + n + ") " + base : base;
    var ids = (q.getAttribute("data-hand-ids") || "").split(" ").filter(Boolean);
    if (seenHands !== null && alertOn()) {
      var fresh = ids.filter(function (id) { return seenHands.indexOf(id) < 0; });
      if (fresh.length) {
        fresh.forEach(function (id) {
          var li = document.getElementById("hand-" + id);
          if (li) li.classList.add("flash");
        });
        document.body.classList.remove("new-hand");
        void document.body.offsetWidth; // restart the animation
        document.body.classList.add("new-hand");
        tone();
      }
    }
    seenHands = ids;
  }

  function setupToggle() {
    var box = document.getElementById("alert-toggle");
    if (!box) return;
    box.checked = alertOn();
    box.addEventListener("change", function () {
      localStorage.setItem(ALERT_KEY, box.checked ? "on" : "off");
    });
  }

  // --- keyboard shortcut -------------------------------------------------------------
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    var button = document.querySelector('button[data-shortcut="' + e.key + '"]');
    if (button && !button.disabled) {
      e.preventDefault();
      button.click();
    }
  });

  // --- live updates and their fallback -----------------------------------------------
  var poller = null;

  function poll() {
    var live = document.getElementById("live");
    if (live && window.htmx) {
      window.htmx.ajax("GET", live.getAttribute("data-poll-url"), { target: "#live", swap: "innerHTML" });
    }
  }

  function paused(on) {
    var notice = document.getElementById("live-notice");
    if (notice) notice.hidden = !on;
    if (on && !poller) {
      poller = window.setInterval(poll, 5000);
    } else if (!on && poller) {
      window.clearInterval(poller);
      poller = null;
    }
  }

  function say(text) {
    var status = document.getElementById("status");
    if (status) status.textContent = text;
  }

  document.addEventListener("htmx:sseError", function () { paused(true); });
  document.addEventListener("htmx:sseOpen", function () { paused(false); });
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    if (xhr.status === 401) {
      say("Your host session has ended: sign in again.");
      window.location.assign("/host/login?next=" + encodeURIComponent(window.location.pathname));
    } else if (xhr.status === 403) {
      say("Refused: this page is out of date. Reload it and try again.");
    } else if (xhr.status === 503) {
      say("The hand queue is briefly unavailable; nothing was changed. Try again in a moment.");
    } else {
      say("Something went wrong (HTTP " + xhr.status + "); nothing was changed. Try again.");
    }
  });
  document.addEventListener("htmx:sendError", function () {
    say("Could not reach the server; nothing was changed. Check your connection and try again.");
  });
  document.addEventListener("htmx:afterSettle", function (e) {
    syncClock(e.target);
    tick();
    onQueue();
  });

  document.addEventListener("DOMContentLoaded", function () {
    syncClock(document);
    setupToggle();
    onQueue();
    tick();
    window.setInterval(tick, 1000);
  });
})();
