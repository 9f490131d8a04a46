/* baton live pages: apply a snapshot, then deltas, from the page's WebSocket.
 *
 * Plain JavaScript, no build step. Everything that came from users (workflow and step
 * names, reasons, errors) is written with textContent, never as HTML. Money arrives as
 * decimal strings ("0.000354", or null for unknown) and is formatted from its digits,
 * never through a float (as baton.display.format_usd formats it on the server).
 */
(function () {
  "use strict";

  var configElement = document.getElementById("baton-config");
  if (!configElement) {
    return;
  }
  var config = JSON.parse(configElement.textContent);
  var connection = document.getElementById("baton-connection");
  var TERMINAL = { completed: true, discarded: true, cancelled: true };
  var MAX_BACKOFF_MS = 15000;

  function setConnection(state, text) {
    document.body.setAttribute("data-socket", state);
    if (connection) {
      connection.setAttribute("data-connection", state);
      connection.textContent = text;
    }
  }

  function formatSeconds(seconds) {
    if (seconds < 60) {
      return seconds.toFixed(1) + " s";
    }
    var whole = Math.floor(seconds);
    var hours = Math.floor(whole / 3600);
    var minutes = Math.floor((whole % 3600) / 60);
    var secs = whole % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (hours) {
      return hours + "h " + pad(minutes) + "m " + pad(secs) + "s";
    }
    return minutes + "m " + pad(secs) + "s";
  }

  /* ------------------------------------------------------------------------- money */
  var DECIMAL = /^(-?)([0-9]*)(?:\.([0-9]*))?$/;

  /* "0.000354" -> {sign: "", whole: "", fraction: "000354"}: no leading zeros in whole,
   * no trailing zeros in fraction; null if the text is not a plain decimal. */
  function decimalParts(text) {
    var match = DECIMAL.exec(String(text));
    if (!match || (match[2] === "" && !match[3])) {
      return null;
    }
    return {
      sign: match[1],
      whole: match[2].replace(/^0+/, ""),
      fraction: (match[3] || "").replace(/0+$/, ""),
    };
  }

  /* Compares two non-negative decimal strings exactly: -1, 0 or 1. */
  function compareDecimal(a, b) {
    var x = decimalParts(a);
    var y = decimalParts(b);
    if (!x || !y) {
      return 0;
    }
    if (x.whole.length !== y.whole.length) {
      return x.whole.length < y.whole.length ? -1 : 1;
    }
    var width = Math.max(x.fraction.length, y.fraction.length);
    var left = x.whole + x.fraction + "0".repeat(width - x.fraction.length);
    var right = y.whole + y.fraction + "0".repeat(width - y.fraction.length);
    return left === right ? 0 : left < right ? -1 : 1;
  }

  /* Rounds a decimal's digits half up to `places` decimals: ["12", "35"]. */
  function roundDigits(parts, places) {
    var fraction = parts.fraction + "0".repeat(Math.max(0, places + 1 - parts.fraction.length));
    var scaled = BigInt((parts.whole || "0") + fraction.slice(0, places));
    if (fraction.charAt(places) >= "5") {
      scaled += BigInt(1);
    }
    var digits = scaled.toString();
    if (digits.length <= places) {
      digits = "0".repeat(places + 1 - digits.length) + digits;
    }
    return [digits.slice(0, digits.length - places), digits.slice(digits.length - places)];
  }

  function thousands(whole) {
    return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  /* As baton.display.format_usd: a dollar or more (or zero) in cents with thousands
   * separators ("$1,234.50"); less keeps three significant digits, so a fraction of a
   * cent never reads as "$0.00" ("$0.000021"). Rounded half up, on the digits. */
  function formatDollars(text) {
    var parts = decimalParts(text);
    if (!parts) {
      return "$" + text;
    }
    var first = (parts.whole + parts.fraction).search(/[1-9]/);
    if (first < 0 || parts.whole.length) {
      var cents = roundDigits(parts, 2);
      return parts.sign + "$" + thousands(cents[0]) + "." + cents[1];
    }
    /* Below a dollar: the first significant digit is at 10^-(first + 1). */
    var places = Math.max(2, 2 + first + 1);
    var rounded = roundDigits(parts, places);
    var fraction = rounded[1].replace(/0+$/, "");
    while (fraction.length < 2) {
      fraction += "0";
    }
    return parts.sign + "$" + rounded[0] + "." + fraction;
  }

  /* "$0.000354"; "unknown" (only unpriced calls); "$0.000354 + 2 unpriced"; "—" (none). */
  function formatCost(cost, unpricedCalls) {
    var unpriced = Number(unpricedCalls) || 0;
    if (cost === null || cost === undefined) {
      return unpriced ? "unknown" : "—";
    }
    if (unpriced) {
      return formatDollars(cost) + " + " + thousands(String(unpriced)) + " unpriced";
    }
    return formatDollars(cost);
  }

  /* For tests and the console: the page formats money exactly as the server does. */
  window.batonLive = {
    formatCost: formatCost,
    formatDollars: formatDollars,
    compareDecimal: compareDecimal,
    stats: { applied: 0, frames: 0 },
  };

  function duration(startIso, endIso) {
    if (!startIso) {
      return "—";
    }
    var end = endIso ? Date.parse(endIso) : Date.now();
    return formatSeconds(Math.max(0, (end - Date.parse(startIso)) / 1000));
  }

  /* One time convention on every page: local time with its zone in the text, UTC on
   * hover (the title). */
  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  function zoneName(date) {
    try {
      var parts = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(date);
      for (var i = 0; i < parts.length; i += 1) {
        if (parts[i].type === "timeZoneName") {
          return parts[i].value;
        }
      }
    } catch (error) { /* an old browser: no zone name */ }
    var offset = -date.getTimezoneOffset();
    return "UTC" + (offset >= 0 ? "+" : "-") + pad2(Math.floor(Math.abs(offset) / 60)) + ":" + pad2(Math.abs(offset) % 60);
  }

  function formatTime(iso) {
    if (!iso) {
      return "—";
    }
    var date = new Date(iso);
    if (isNaN(date.getTime())) {
      return iso;
    }
    return date.getFullYear() + "-" + pad2(date.getMonth() + 1) + "-" + pad2(date.getDate()) +
      " " + pad2(date.getHours()) + ":" + pad2(date.getMinutes()) + ":" + pad2(date.getSeconds()) +
      " " + zoneName(date);
  }

  function formatUtc(iso) {
    var date = new Date(iso);
    if (!iso || isNaN(date.getTime())) {
      return "";
    }
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  /* Writes a time into `element` (a <time> or any element): local text, UTC title. */
  function setTime(element, iso) {
    element.textContent = formatTime(iso);
    if (iso) {
      element.setAttribute("title", formatUtc(iso));
      if (element.tagName === "TIME") {
        element.setAttribute("datetime", iso);
      }
    } else {
      element.removeAttribute("title");
    }
  }

  function localiseTimes(root) {
    Array.prototype.forEach.call(root.querySelectorAll("time[datetime]"), function (element) {
      setTime(element, element.getAttribute("datetime"));
    });
  }

  /* Progress buckets, as baton.live.progress.bucket: each step state counts in one. */
  var BUCKETS = ["completed", "failed", "cancelled", "running", "waiting"];
  var BUCKET_OF = { completed: "completed", discarded: "failed", cancelled: "cancelled", executing: "running" };

  function bucketOf(state) {
    return BUCKET_OF[state] || "waiting";
  }

  function emptyCounts() {
    return { completed: 0, failed: 0, cancelled: 0, running: 0, waiting: 0 };
  }

  function countsText(counts) {
    var parts = [];
    BUCKETS.forEach(function (name) {
      if (counts[name]) {
        parts.push(thousands(String(counts[name])) + " " + name);
      }
    });
    return parts.length ? parts.join(" · ") : "no steps";
  }

  /* Redraws a stacked bar (a .stack element) from counts. */
  function renderStack(stack, counts) {
    var total = 0;
    BUCKETS.forEach(function (name) { total += counts[name] || 0; });
    while (stack.firstChild) {
      stack.removeChild(stack.firstChild);
    }
    BUCKETS.forEach(function (name) {
      if (counts[name]) {
        var segment = document.createElement("span");
        segment.className = "segment";
        segment.setAttribute("data-bucket", name);
        segment.style.width = (100 * counts[name] / total).toFixed(3) + "%";
        stack.appendChild(segment);
      }
    });
    stack.setAttribute("aria-label", countsText(counts));
  }

  /* A WebSocket that reconnects with exponential backoff (0.5 s doubling to 15 s). */
  function openSocket(path, handlers) {
    var attempt = 0;
    var socket = null;
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;

    function connect() {
      setConnection(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting…" : "connecting…");
      socket = new WebSocket(url);
      socket.onopen = function () {
        attempt = 0;
        setConnection("live", "live");
      };
      socket.onmessage = function (message) {
        var data;
        try {
          data = JSON.parse(message.data);
        } catch (error) {
          return;
        }
        handlers.message(data);
      };
      socket.onclose = function (event) {
        if (event.code === 4403) {
          setConnection("refused", "not allowed");
          return;
        }
        if (event.code === 4404) {
          setConnection("refused", "workflow not found");
          return;
        }
        var delay = Math.min(MAX_BACKOFF_MS, 500 * Math.pow(2, attempt));
        attempt += 1;
        setConnection("reconnecting", "offline, retrying in " + Math.round(delay / 1000) + " s");
        window.setTimeout(connect, delay);
      };
    }

    connect();
    return {
      send: function (data) {
        if (socket && socket.readyState === WebSocket.OPEN) {
          socket.send(JSON.stringify(data));
        }
      },
    };
  }

  /* ------------------------------------------------------------------------ overview */
  /* A small map of the whole graph in the frame's corner, shown while part of the
   * drawing is off screen: every node a rectangle in its state's colour, the frame's
   * view a rectangle you click or drag to move it. One canvas, whatever the graph's
   * size, redrawn at most once a frame when states change. A very flat or very tall
   * drawing is stretched across its short side, so the map stays big enough to aim at. */
  function minimap(wrap, svg, width, height) {
    var box = wrap.querySelector('[data-role="minimap"]');
    var nothing = { show: function () {}, redraw: function () {}, onPick: function () {} };
    if (!box || !box.querySelector("canvas")) {
      return nothing;
    }
    var canvas = box.querySelector("canvas");
    var lens = box.querySelector('[data-role="minimap-view"]');
    var context = canvas.getContext && canvas.getContext("2d");
    if (!context) {
      return nothing;
    }
    var MIN_SIDE = 28;
    var size = { w: 0, h: 0, sx: 1, sy: 1, frameW: -1, frameH: -1 };
    var items = null; /* [{element, x, y, w, h}], read from the drawing once */
    var colours = {};
    var edges = null;
    var pick = null;
    var scheduled = false;
    var TRANSLATE = /translate\(\s*(-?[\d.]+)[ ,]+(-?[\d.]+)\s*\)/;

    function collect() {
      items = [];
      var nodeW = Number(svg.getAttribute("data-node-width")) || 184;
      var nodeH = Number(svg.getAttribute("data-node-height")) || 42;
      Array.prototype.forEach.call(svg.querySelectorAll(".node, .group"), function (element) {
        var at = TRANSLATE.exec(element.getAttribute("transform") || "");
        if (at) {
          items.push({ element: element, x: Number(at[1]), y: Number(at[2]), w: nodeW, h: nodeH });
        }
      });
      var path = svg.querySelector("path.edges");
      if (path && window.Path2D) {
        try {
          edges = new Path2D(path.getAttribute("d"));
        } catch (error) {
          edges = null;
        }
      }
      /* The states' colours, as the legend shows them (live.css is their one source). */
      Array.prototype.forEach.call(document.querySelectorAll(".legend .badge[data-state]"), function (badge) {
        colours[badge.getAttribute("data-state")] = getComputedStyle(badge).backgroundColor;
      });
    }

    function measure(frameBox) {
      if (frameBox.width === size.frameW && frameBox.height === size.frameH) {
        return;
      }
      size.frameW = frameBox.width;
      size.frameH = frameBox.height;
      var maxW = Math.max(MIN_SIDE, Math.min(240, frameBox.width * 0.45));
      var maxH = Math.max(MIN_SIDE, Math.min(150, frameBox.height * 0.3));
      var scale = Math.min(maxW / width, maxH / height);
      size.w = Math.round(Math.min(maxW, Math.max(MIN_SIDE, width * scale)));
      size.h = Math.round(Math.min(maxH, Math.max(MIN_SIDE, height * scale)));
      size.sx = size.w / width;
      size.sy = size.h / height;
      var ratio = window.devicePixelRatio || 1;
      canvas.width = Math.round(size.w * ratio);
      canvas.height = Math.round(size.h * ratio);
      canvas.style.width = size.w + "px";
      canvas.style.height = size.h + "px";
      draw();
    }

    function draw() {
      scheduled = false;
      if (box.hidden || !size.w) {
        return;
      }
      if (!items) {
        collect();
      }
      var ratio = canvas.width / size.w;
      context.setTransform(1, 0, 0, 1, 0, 0);
      context.clearRect(0, 0, canvas.width, canvas.height);
      context.setTransform(ratio * size.sx, 0, 0, ratio * size.sy, 0, 0);
      if (edges) {
        context.strokeStyle = "rgba(120, 132, 145, .35)";
        context.lineWidth = 1 / Math.max(size.sx, size.sy);
        context.stroke(edges);
      }
      /* At least one device pixel each way, so no node vanishes from the map. */
      var minW = 1 / (ratio * size.sx);
      var minH = 1 / (ratio * size.sy);
      items.forEach(function (item) {
        context.fillStyle = colours[item.element.getAttribute("data-state")] || "#b0bec5";
        context.fillRect(item.x, item.y, Math.max(item.w, minW), Math.max(item.h, minH));
      });
      window.batonLive.stats.minimapDraws = (window.batonLive.stats.minimapDraws || 0) + 1;
    }

    function redraw() {
      if (!scheduled && !box.hidden) {
        scheduled = true;
        window.requestAnimationFrame(draw);
      }
    }

    /* Shown while the drawing is not all on screen; the lens is the frame's view. */
    function show(view, frameBox) {
      var left = -view.x / view.k;
      var top = -view.y / view.k;
      var seenW = frameBox.width / view.k;
      var seenH = frameBox.height / view.k;
      var whole = left <= 0.5 && top <= 0.5 && left + seenW >= width - 0.5 && top + seenH >= height - 0.5;
      if (wrap.getAttribute("data-minimap") !== (whole ? "hidden" : "shown")) {
        box.hidden = whole;
        wrap.setAttribute("data-minimap", whole ? "hidden" : "shown");
        if (!whole) {
          size.frameW = -1; /* measure and draw now that it is on screen */
        }
      }
      if (whole) {
        return;
      }
      measure(frameBox);
      /* The lens, kept inside the map (a view past the drawing's edge pins to it). */
      var x1 = Math.max(0, Math.min(size.w, left * size.sx));
      var y1 = Math.max(0, Math.min(size.h, top * size.sy));
      var x2 = Math.max(0, Math.min(size.w, (left + seenW) * size.sx));
      var y2 = Math.max(0, Math.min(size.h, (top + seenH) * size.sy));
      lens.style.left = x1.toFixed(1) + "px";
      lens.style.top = y1.toFixed(1) + "px";
      lens.style.width = Math.max(4, x2 - x1).toFixed(1) + "px";
      lens.style.height = Math.max(4, y2 - y1).toFixed(1) + "px";
    }

    function pointAt(event) {
      var rect = canvas.getBoundingClientRect();
      var mx = Math.max(0, Math.min(size.w, event.clientX - rect.left));
      var my = Math.max(0, Math.min(size.h, event.clientY - rect.top));
      return [mx / size.sx, my / size.sy];
    }

    var dragging = null;
    box.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 || !pick) {
        return;
      }
      event.preventDefault();
      event.stopPropagation();
      dragging = event.pointerId;
      box.setPointerCapture(event.pointerId);
      pick.apply(null, pointAt(event));
    });
    box.addEventListener("pointermove", function (event) {
      if (dragging === event.pointerId) {
        pick.apply(null, pointAt(event));
      }
    });
    function release(event) {
      if (dragging === event.pointerId) {
        dragging = null;
      }
    }
    box.addEventListener("pointerup", release);
    box.addEventListener("pointercancel", release);

    return {
      show: show,
      redraw: redraw,
      onPick: function (callback) { pick = callback; },
    };
  }

  /* ------------------------------------------------------------ zoom and pan (graph) */
  /* The graph opens fitted to its frame, but never smaller than READABLE_ZOOM, where
   * node labels still read (a deep or wide graph opens with its roots on the left and
   * an overview in the corner to go elsewhere). The wheel zooms around the pointer (down
   * to the whole graph), a drag pans, the toolbar and the keyboard (+ − 0 1 and the
   * arrows) do both; "Fit" and 0 go back to the opening view. */
  var READABLE_ZOOM = 0.6;

  function graphView(wrap, svg, viewport) {
    var width = Number(svg.getAttribute("data-width")) || 1;
    var height = Number(svg.getAttribute("data-height")) || 1;
    var view = { k: 1, x: 0, y: 0 };
    var MAX_ZOOM = 4;
    var fitted = true; /* until the user moves the view, a resize refits */
    var zoomText = wrap.querySelector('[data-role="zoom"]');
    var overview = minimap(wrap, svg, width, height);

    function frame() {
      return svg.getBoundingClientRect();
    }

    /* The zoom at which the whole drawing fits (1 at most). */
    function wholeZoom() {
      var box = frame();
      var pad = 16;
      return Math.min((box.width - pad) / width, (box.height - pad) / height, 1);
    }

    function minZoom() {
      return Math.min(0.05, wholeZoom());
    }

    function apply() {
      viewport.setAttribute("transform", "translate(" + view.x.toFixed(1) + " " + view.y.toFixed(1) + ") scale(" + view.k.toFixed(5) + ")");
      svg.classList.toggle("far", view.k < 0.4);
      wrap.setAttribute("data-zoom", view.k.toFixed(4));
      wrap.setAttribute("data-pan", view.x.toFixed(0) + "," + view.y.toFixed(0));
      if (zoomText) {
        zoomText.textContent = Math.round(view.k * 100) + "%";
      }
      overview.show(view, frame());
    }

    function fit() {
      var box = frame();
      view.k = Math.max(wholeZoom(), READABLE_ZOOM);
      /* Too wide at that zoom: the first columns (the roots) on screen, not the middle. */
      view.x = width * view.k <= box.width ? (box.width - width * view.k) / 2 : 0;
      view.y = (box.height - height * view.k) / 2;
      fitted = true;
      apply();
    }

    function zoomAt(factor, cx, cy) {
      var k = Math.min(MAX_ZOOM, Math.max(minZoom(), view.k * factor));
      view.x = cx - (cx - view.x) * (k / view.k);
      view.y = cy - (cy - view.y) * (k / view.k);
      view.k = k;
      fitted = false;
      apply();
    }

    function zoomCentre(factor) {
      var box = frame();
      zoomAt(factor, box.width / 2, box.height / 2);
    }

    function panBy(dx, dy) {
      view.x += dx;
      view.y += dy;
      fitted = false;
      apply();
    }

    /* Puts the drawing's point (gx, gy) at the centre of the frame. */
    function centreOn(gx, gy) {
      var box = frame();
      view.x = box.width / 2 - gx * view.k;
      view.y = box.height / 2 - gy * view.k;
      fitted = false;
      apply();
    }
    overview.onPick(centreOn);

    /* The page a group's link opened: start on that group's steps (x, y, w, h), when
     * the drawing does not all fit anyway. */
    function focusOn(box) {
      var frameBox = frame();
      if (width * view.k <= frameBox.width && height * view.k <= frameBox.height) {
        return;
      }
      centreOn(box[0] + box[2] / 2, box[1] + box[3] / 2);
    }

    function actual() {
      var box = frame();
      /* 1:1 around the centre of what is on screen. */
      zoomAt(1 / view.k, box.width / 2, box.height / 2);
    }

    svg.addEventListener("wheel", function (event) {
      event.preventDefault();
      var box = frame();
      var delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
      zoomAt(Math.exp(-delta * 0.0015), event.clientX - box.left, event.clientY - box.top);
    }, { passive: false });

    var drag = null;
    var justDragged = false;
    svg.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) {
        return;
      }
      drag = { id: event.pointerId, x: event.clientX, y: event.clientY, moved: false };
    });
    svg.addEventListener("pointermove", function (event) {
      if (!drag || drag.id !== event.pointerId) {
        return;
      }
      var dx = event.clientX - drag.x;
      var dy = event.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) {
        return;
      }
      if (!drag.moved) {
        drag.moved = true;
        svg.setPointerCapture(event.pointerId);
        svg.classList.add("dragging");
      }
      drag.x = event.clientX;
      drag.y = event.clientY;
      panBy(dx, dy);
    });
    function endDrag(event) {
      if (drag && drag.id === event.pointerId) {
        justDragged = drag.moved;
        drag = null;
        svg.classList.remove("dragging");
      }
    }
    svg.addEventListener("pointerup", endDrag);
    svg.addEventListener("pointercancel", endDrag);
    /* A drag is not a click on the node it started on. */
    svg.addEventListener("click", function (event) {
      if (justDragged) {
        event.preventDefault();
        event.stopPropagation();
        justDragged = false;
      }
    }, true);

    Array.prototype.forEach.call(wrap.querySelectorAll("[data-zoom]"), function (button) {
      button.addEventListener("click", function () {
        var action = button.getAttribute("data-zoom");
        if (action === "in") { zoomCentre(1.4); }
        else if (action === "out") { zoomCentre(1 / 1.4); }
        else if (action === "fit") { fit(); }
        else if (action === "actual") { actual(); }
      });
    });

    wrap.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) {
        return;
      }
      var step = 60;
      var handled = true;
      switch (event.key) {
        case "+": case "=": zoomCentre(1.4); break;
        case "-": case "_": zoomCentre(1 / 1.4); break;
        case "0": fit(); break;
        case "1": actual(); break;
        case "ArrowLeft": panBy(step, 0); break;
        case "ArrowRight": panBy(-step, 0); break;
        case "ArrowUp": panBy(0, step); break;
        case "ArrowDown": panBy(0, -step); break;
        default: handled = false;
      }
      if (handled) {
        event.preventDefault();
      }
    });

    function resized() {
      if (fitted) {
        fit();
      }
    }
    window.addEventListener("resize", resized);

    fit();
    return {
      fit: fit, zoomAt: zoomAt, panBy: panBy, centreOn: centreOn, focusOn: focusOn, view: view,
      resized: resized,
      statesChanged: overview.redraw,
    };
  }

  /* -------------------------------------------------------------- actions (page) */
  /* Cancel / retry buttons for users with baton.change_workflow (the server renders them
   * only for them, and checks again on POST). The result is said in words; the states
   * themselves then arrive over the socket like any other change. */
  function actionsPanel(detail) {
    var form = document.getElementById("baton-actions");
    var RETRYABLE = { discarded: true, cancelled: true };
    if (!form || !config.canChange) {
      return;
    }
    var token = form.querySelector('input[name="csrfmiddlewaretoken"]').value;
    var cancel = form.querySelector('[data-action="cancel"]');
    var retry = form.querySelector('[data-action="retry"]');
    var result = form.querySelector('[data-role="action-result"]');
    var stepButton = detail.querySelector('[data-action="retry-step"]');
    var stepResult = detail.querySelector('[data-role="step-action-result"]');
    var stepName = null;

    function say(element, ok, message) {
      element.setAttribute("data-result", ok ? "ok" : "error");
      element.textContent = message;
    }

    function post(fields, output, button) {
      var body = new FormData();
      body.append("csrfmiddlewaretoken", token);
      Object.keys(fields).forEach(function (key) { body.append(key, fields[key]); });
      button.disabled = true;
      say(output, true, "…");
      return window.fetch(config.actionUrl, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRFToken": token },
      }).then(function (response) {
        return response.json().then(function (data) {
          say(output, Boolean(data.ok), data.message || ("HTTP " + response.status));
        }, function () {
          say(output, false, "The server answered " + response.status + ".");
        });
      }, function () {
        say(output, false, "The request did not reach the server.");
      }).then(function () {
        button.disabled = false;
      });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = event.submitter || cancel;
      var action = button.value;
      if (action === "cancel" && !window.confirm("Cancel this workflow? Running steps are asked to stop.")) {
        return;
      }
      post({ action: action }, result, button);
    });

    if (stepButton) {
      stepButton.addEventListener("click", function () {
        if (stepName !== null) {
          post({ action: "retry-step", step: stepName }, stepResult, stepButton);
        }
      });
    }

    window.batonLive.onWorkflow = function (summary) {
      cancel.hidden = summary.state !== "executing";
      retry.hidden = !(summary.state === "failed" || summary.state === "cancelled");
    };
    window.batonLive.onStepShown = function (step, changed) {
      if (!stepButton) {
        return;
      }
      if (changed) {
        stepResult.textContent = "";
      }
      stepName = step.name;
      stepButton.hidden = !RETRYABLE[step.state];
    };
  }

  /* ------------------------------------------------------------------ workflow page */
  function workflowPage() {
    var workflow = config.workflow;
    var groupSizes = config.groups || {};
    /* Steps of folded groups (a big graph's steps folded by column and name): their
     * events carry no group of theirs, so the page is told where they count. */
    var foldOf = new Map();
    Object.keys(config.folds || {}).forEach(function (name) {
      config.folds[name].forEach(function (id) { foldOf.set(id, name); });
    });
    /* Every step the page knows: id -> {state, version, step, node, group}. Drawn steps
     * have a node; steps of a collapsed group count in their group's node. */
    var steps = new Map();
    var nodes = new Map();
    var groups = new Map();
    var counts = emptyCounts();
    var done = 0;
    var selected = null;
    var header = document.getElementById("baton-workflow");
    var stateBadge = header.querySelector('[data-role="workflow-state"]');
    var progressText = header.querySelector('[data-role="progress"]');
    var progressBar = header.querySelector('[data-role="bar"]');
    var countsLabel = header.querySelector('[data-role="counts"]');
    var durationText = header.querySelector('[data-role="duration"]');
    var costText = header.querySelector('[data-role="cost"]');
    var budgetText = header.querySelector('[data-role="budget"]');
    var reasonFact = header.querySelector('[data-role="reason-fact"]');
    var reasonText = header.querySelector('[data-role="reason"]');
    var detail = document.getElementById("baton-detail");
    var wrap = document.getElementById("baton-graph-wrap");
    var svg = document.getElementById("baton-graph");
    /* The workflow's running totals: both only grow, so the highest seen is the newest
     * (events from several workers may cross). */
    var totals = { cost: null, unpriced: 0 };

    localiseTimes(document);
    actionsPanel(detail);
    /* On a wide screen the graph's frame ends above the window's bottom edge, whatever
     * notes came before it (live.css's height assumes none); phones scroll to it. */
    function frameToWindow() {
      wrap.style.height = "";
      if (window.innerWidth <= 700) {
        return;
      }
      var room = window.innerHeight - (wrap.getBoundingClientRect().top + window.scrollY) - 16;
      if (room >= 320 && room < wrap.offsetHeight) {
        wrap.style.height = room + "px";
      }
    }
    frameToWindow();
    window.addEventListener("resize", frameToWindow);
    window.batonLive.view = graphView(wrap, svg, document.getElementById("baton-viewport"));
    var focus = /^#focus=(.+)$/.exec(location.hash);
    if (focus) {
      var focusBox = null;
      try {
        focusBox = (config.expandedBoxes || {})[decodeURIComponent(focus[1])];
      } catch (error) { /* a malformed fragment: the opening view */ }
      if (focusBox) {
        window.batonLive.view.focusOn(focusBox);
      }
    }

    Array.prototype.forEach.call(svg.querySelectorAll(".node"), function (element) {
      var node = {
        id: Number(element.getAttribute("data-step-id")),
        element: element,
        stateText: element.querySelector(".state"),
        title: element.querySelector("title"),
        state: element.getAttribute("data-state"),
        version: Number(element.getAttribute("data-version")) || 0,
        step: { name: element.getAttribute("data-step"), state: element.getAttribute("data-state") },
      };
      nodes.set(node.id, node);
      steps.set(node.id, { state: node.state, version: node.version, node: node, group: null });
      counts[bucketOf(node.state)] += 1;
      if (TERMINAL[node.state]) {
        done += 1;
      }
      element.addEventListener("click", function () { showDetail(node); });
      element.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          showDetail(node);
        }
      });
    });

    Array.prototype.forEach.call(svg.querySelectorAll(".group"), function (element) {
      groups.set(element.getAttribute("data-group"), {
        element: element,
        counts: null, /* known from the snapshot on */
        countsText: element.querySelector('[data-role="group-counts"]'),
        bar: element.querySelector(".group-bar"),
        title: element.querySelector("title"),
        dirty: false,
      });
    });

    function groupState(c) {
      if (c.running) { return "executing"; }
      if (c.failed) { return "discarded"; }
      if (c.waiting) { return c.completed ? "available" : "waiting"; }
      if (c.cancelled) { return "cancelled"; }
      return "completed";
    }

    var SVG_NS = "http://www.w3.org/2000/svg";
    var GROUP_BAR = 164;

    function renderGroup(name, group) {
      var c = group.counts;
      var size = groupSizes[name] || 0;
      var text = countsText(c);
      group.element.setAttribute("data-state", groupState(c));
      group.countsText.textContent = text;
      group.title.textContent = name + ": " + size + " steps (" + text + "). Click to draw each step.";
      while (group.bar.firstChild) {
        group.bar.removeChild(group.bar.firstChild);
      }
      var x = 0;
      BUCKETS.forEach(function (bucket) {
        if (c[bucket]) {
          var width = GROUP_BAR * c[bucket] / Math.max(size, 1);
          var rect = document.createElementNS(SVG_NS, "rect");
          rect.setAttribute("data-bucket", bucket);
          rect.setAttribute("height", "5");
          rect.setAttribute("x", x.toFixed(1));
          rect.setAttribute("width", width.toFixed(1));
          group.bar.appendChild(rect);
          x += width;
        }
      });
      group.dirty = false;
    }

    function stateLabel(step) {
      if (step.state === "retryable" || (step.state === "executing" && step.attempt > 1)) {
        return step.state + " · try " + step.attempt + "/" + step.max_attempts;
      }
      return step.state;
    }

    function renderProgress() {
      var total = Math.max(workflow.step_count || 0, steps.size);
      progressText.textContent = done + "/" + total;
      renderStack(progressBar, counts);
      countsLabel.textContent = countsText(counts);
    }

    function renderDuration() {
      durationText.textContent = duration(workflow.created_at, workflow.finished_at);
    }

    function applyTotals(cost, unpricedCalls) {
      var unpriced = Number(unpricedCalls) || 0;
      if (cost !== null && cost !== undefined &&
          (totals.cost === null || compareDecimal(cost, totals.cost) > 0)) {
        totals.cost = String(cost);
      }
      totals.unpriced = Math.max(totals.unpriced, unpriced);
      costText.textContent = formatCost(totals.cost, totals.unpriced);
      costText.setAttribute("data-cost-usd", totals.cost === null ? "" : totals.cost);
    }

    function applyWorkflow(summary) {
      workflow = summary;
      stateBadge.setAttribute("data-state", summary.state);
      stateBadge.textContent = summary.state;
      header.setAttribute("data-state", summary.state);
      document.body.setAttribute("data-workflow-state", summary.state);
      applyTotals(summary.cost_usd, summary.unpriced_calls);
      if (summary.budget_usd !== null && summary.budget_usd !== undefined) {
        budgetText.textContent = "of " + formatDollars(summary.budget_usd);
        budgetText.hidden = false;
      } else {
        budgetText.hidden = true;
      }
      reasonText.textContent = summary.reason || "";
      reasonFact.hidden = !summary.reason;
      renderDuration();
      if (window.batonLive.onWorkflow) {
        window.batonLive.onWorkflow(summary);
      }
    }

    function nodeTitle(step) {
      var unpriced = Number(step.unpriced_calls) || 0;
      if ((step.cost_usd === null || step.cost_usd === undefined) && !unpriced) {
        return step.name;
      }
      return step.name + " · cost " + formatCost(step.cost_usd, unpriced);
    }

    /* Steps added since the page was drawn (job.graft(), baton.append): said, with a
     * link that draws them; the graph itself is laid out by the server. */
    var added = new Set();
    var addedNote = document.querySelector('[data-role="added"]');
    function noteAdded(step) {
      if (!addedNote || added.has(step.id) || typeof step.id !== "number") {
        return;
      }
      added.add(step.id);
      var grafted = step.grafted_by !== null && step.grafted_by !== undefined;
      addedNote.querySelector('[data-role="added-text"]').textContent =
        added.size + (added.size === 1 ? " step was" : " steps were") +
        " added since this page was drawn" + (grafted ? " (grafted)." : ".");
      addedNote.querySelector('[data-role="redraw"]').setAttribute("href", location.href);
      addedNote.hidden = false;
    }

    /* Keep each step's highest version: events from several workers may cross. */
    function applyStep(step) {
      var entry = steps.get(step.id);
      if (!entry) {
        var groupName = foldOf.get(step.id) || step.group;
        if (!groupName || !groups.has(groupName)) {
          noteAdded(step);
          return false;
        }
        entry = { state: null, version: -1, node: null, group: groupName };
        steps.set(step.id, entry);
      }
      var node = entry.node;
      if (node && step.version === node.version && node.step.id === undefined) {
        /* The snapshot of a step the page drew at this version: keep its fields. */
        node.step = step;
        node.title.textContent = nodeTitle(step);
        return false;
      }
      if (!(step.version > entry.version)) {
        return false;
      }
      var old = entry.state;
      if (old !== null) {
        counts[bucketOf(old)] -= 1;
        done -= TERMINAL[old] ? 1 : 0;
      }
      counts[bucketOf(step.state)] += 1;
      done += TERMINAL[step.state] ? 1 : 0;
      entry.state = step.state;
      entry.version = step.version;
      entry.step = step;
      if (entry.group) {
        var group = groups.get(entry.group);
        if (group.counts) {
          if (old !== null) {
            group.counts[bucketOf(old)] -= 1;
          }
          group.counts[bucketOf(step.state)] += 1;
          group.dirty = true;
        }
        return true;
      }
      node.version = step.version;
      node.state = step.state;
      node.step = step;
      node.element.setAttribute("data-state", step.state);
      node.element.setAttribute("data-version", String(step.version));
      node.stateText.textContent = stateLabel(step);
      node.title.textContent = nodeTitle(step);
      if (selected === node) {
        var merged = Object.assign({}, node.detail || {}, step);
        delete merged.explanation; /* stale: a new one is on its way */
        fillDetail(merged);
        socket.send({ action: "detail", step_id: node.id });
      }
      return true;
    }

    /* Step events are drawn once per animation frame, however many arrive: a burst of
     * transitions costs one layout, not one per event. Only the newest event of each
     * step within a frame matters (older versions would be dropped anyway). */
    var pending = new Map();
    var scheduled = false;

    function flush() {
      scheduled = false;
      var changed = false;
      pending.forEach(function (step) {
        changed = applyStep(step) || changed;
        window.batonLive.stats.applied += 1;
      });
      pending.clear();
      groups.forEach(function (group, name) {
        if (group.dirty) {
          renderGroup(name, group);
        }
      });
      if (changed) {
        renderProgress();
        window.batonLive.view.statesChanged();
      }
      window.batonLive.stats.frames += 1;
    }

    function queueStep(step) {
      var queued = pending.get(step.id);
      if (!queued || step.version > queued.version) {
        pending.set(step.id, step);
      }
      if (!scheduled) {
        scheduled = true;
        window.requestAnimationFrame(flush);
      }
    }

    function fillDetail(step) {
      var fields = {
        name: step.name,
        state: step.state,
        attempt: step.attempt === undefined ? "—" : step.attempt + " of " + step.max_attempts,
        duration: step.started_at ? duration(step.started_at, step.finished_at) : "—",
        cost: step.unpriced_calls === undefined ? "—"
          : formatCost(step.cost_usd, step.unpriced_calls),
        task_name: step.task_name || "—",
        queue: step.queue || "—",
        reason: step.reason || "—",
        last_error: step.last_error || "—",
      };
      Object.keys(fields).forEach(function (key) {
        var element = detail.querySelector('[data-field="' + key + '"]');
        if (element) {
          element.textContent = fields[key];
        }
      });
      setTime(detail.querySelector('[data-field="started_at"]'), step.started_at);
      setTime(detail.querySelector('[data-field="finished_at"]'), step.finished_at);
      detail.querySelector('[data-field="state"]').setAttribute("data-state", step.state);
      var changed = detail.getAttribute("data-step-id") !== String(step.id);
      detail.setAttribute("data-step-id", String(step.id));
      detail.setAttribute("data-step-state", step.state);
      var why = detail.querySelector('[data-field="explanation"]');
      if (changed || step.explanation) {
        while (why.firstChild) {
          why.removeChild(why.firstChild);
        }
        var sentences = step.explanation ? step.explanation.sentences : ["…"];
        sentences.forEach(function (sentence) {
          var item = document.createElement("li");
          item.textContent = sentence;
          why.appendChild(item);
        });
        why.setAttribute("data-no-worker", step.explanation && step.explanation.no_worker ? "true" : "false");
      }
      if (window.batonLive.onStepShown) {
        window.batonLive.onStepShown(step, changed);
      }
    }

    function showDetail(node) {
      if (selected) {
        selected.element.classList.remove("selected");
      }
      selected = node;
      node.element.classList.add("selected");
      detail.hidden = false;
      /* On wide screens the graph makes room for the panel instead of hiding under it. */
      document.body.classList.add("detail-open");
      window.batonLive.view.resized();
      fillDetail(Object.assign({ id: node.id }, node.detail || {}, node.step));
      socket.send({ action: "detail", step_id: node.id });
    }
    window.batonLive.refreshDetail = function () {
      if (selected) {
        socket.send({ action: "detail", step_id: selected.id });
      }
    };

    detail.querySelector('[data-role="close"]').addEventListener("click", function () {
      detail.hidden = true;
      document.body.classList.remove("detail-open");
      window.batonLive.view.resized();
      if (selected) {
        selected.element.classList.remove("selected");
        selected = null;
      }
    });

    function handleMessage(data) {
        if (data.type === "batch") {
          /* One broadcast's events for this workflow, in order; drawn with the next frame. */
          (Array.isArray(data.messages) ? data.messages : []).forEach(function (one) {
            if (one && one.type !== "batch") {
              handleMessage(one);
            }
          });
        } else if (data.type === "snapshot") {
          /* A fresh count from the snapshot: it holds every step. */
          pending.clear();
          data.steps.forEach(applyStep);
          counts = emptyCounts();
          done = 0;
          groups.forEach(function (group) { group.counts = emptyCounts(); });
          steps.forEach(function (entry) {
            if (entry.state === null) {
              return;
            }
            counts[bucketOf(entry.state)] += 1;
            done += TERMINAL[entry.state] ? 1 : 0;
            if (entry.group) {
              groups.get(entry.group).counts[bucketOf(entry.state)] += 1;
            }
          });
          groups.forEach(function (group, name) { renderGroup(name, group); });
          applyWorkflow(data.workflow);
          window.batonLive.view.statesChanged();
          renderProgress();
          document.body.setAttribute("data-snapshot", "received");
        } else if (data.type === "step") {
          queueStep(data.step);
          if ("workflow_unpriced_calls" in data || "workflow_cost_usd" in data) {
            applyTotals(data.workflow_cost_usd, data.workflow_unpriced_calls);
          }
        } else if (data.type === "workflow") {
          applyWorkflow(data.workflow);
        } else if (data.type === "detail") {
          var node = nodes.get(data.step.id);
          if (node) {
            node.detail = data.step;
            if (selected === node) {
              /* The node's own state is at least as new as the detail's. */
              var merged = Object.assign({}, data.step);
              if (node.step.version !== undefined && node.step.version > data.step.version) {
                Object.assign(merged, node.step);
              }
              fillDetail(merged);
            }
          }
        } else if (window.batonLive.onMessage) {
          window.batonLive.onMessage(data);
        }
    }
    /* For tests and the console: hand the page a message as if the socket sent it. */
    window.batonLive.deliver = handleMessage;
    var socket = openSocket(config.socket, { message: handleMessage });
    window.batonLive.socket = socket;

    renderProgress();
    applyTotals(workflow.cost_usd, workflow.unpriced_calls);
    window.setInterval(function () {
      if (!workflow.finished_at) {
        renderDuration();
      }
    }, 1000);
    /* An open step that is not finished: its dependencies and queue move without it. */
    window.setInterval(function () {
      if (selected && !TERMINAL[selected.state] && !detail.hidden) {
        socket.send({ action: "detail", step_id: selected.id });
      }
    }, 5000);
  }

  /* ---------------------------------------------------------------------- list page */
  function listPage() {
    var body = document.querySelector("#baton-workflows tbody");
    var rows = new Map();
    var uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

    localiseTimes(document);
    Array.prototype.forEach.call(body.querySelectorAll("tr[data-workflow-id]"), function (row) {
      rows.set(row.getAttribute("data-workflow-id"), row);
    });

    function cell(row, text) {
      var td = document.createElement("td");
      if (text !== undefined) {
        td.textContent = text;
      }
      row.appendChild(td);
      return td;
    }

    function newRow(summary) {
      var row = document.createElement("tr");
      row.setAttribute("data-workflow-id", summary.id);
      row.setAttribute("data-created", summary.created_at);
      var name = cell(row);
      name.className = "name";
      var link = document.createElement("a");
      link.href = config.detailUrl.replace("00000000-0000-0000-0000-000000000000", summary.id);
      link.textContent = summary.name;
      name.appendChild(link);
      var badge = document.createElement("span");
      badge.className = "badge";
      badge.setAttribute("data-role", "state");
      cell(row).appendChild(badge);
      var progress = cell(row);
      progress.className = "progress-cell";
      var bar = document.createElement("span");
      bar.className = "stack";
      bar.setAttribute("data-role", "bar");
      bar.setAttribute("role", "img");
      progress.appendChild(bar);
      progress.appendChild(document.createTextNode(" "));
      var text = document.createElement("span");
      text.setAttribute("data-role", "progress");
      progress.appendChild(text);
      progress.appendChild(document.createTextNode(" "));
      var countsLabel = document.createElement("span");
      countsLabel.className = "counts";
      countsLabel.setAttribute("data-role", "counts");
      progress.appendChild(countsLabel);
      var time = document.createElement("time");
      setTime(time, summary.created_at);
      cell(row).appendChild(time);
      cell(row).setAttribute("data-role", "duration");
      cell(row, "—").setAttribute("data-role", "cost");
      row.classList.add("fresh");
      return row;
    }

    function insertSorted(row, createdAt) {
      var empty = body.querySelector("tr.empty");
      if (empty) {
        empty.remove();
      }
      /* Newest first: before the first row created earlier than this one. */
      var created = Date.parse(createdAt);
      var before = null;
      Array.prototype.some.call(body.querySelectorAll("tr[data-workflow-id]"), function (other) {
        if (Date.parse(other.getAttribute("data-created")) < created) {
          before = other;
          return true;
        }
        return false;
      });
      body.insertBefore(row, before);
    }

    function renderRow(row) {
      row.querySelector('[data-role="duration"]').textContent = duration(
        row.getAttribute("data-created"),
        row.getAttribute("data-finished") || null
      );
    }

    function applySummary(summary) {
      if (!uuidPattern.test(summary.id)) {
        return;
      }
      var row = rows.get(summary.id);
      if (!row) {
        if (config.page !== 1 || config.filtered) {
          return;
        }
        row = newRow(summary);
        insertSorted(row, summary.created_at);
        rows.set(summary.id, row);
      }
      var doneSteps = summary.step_count - summary.unfinished_steps;
      row.setAttribute("data-state", summary.state);
      row.setAttribute("data-finished", summary.finished_at || "");
      var badge = row.querySelector('[data-role="state"]');
      badge.setAttribute("data-state", summary.state);
      badge.textContent = summary.state;
      row.querySelector('[data-role="progress"]').textContent = doneSteps + "/" + summary.step_count;
      if (summary.counts) {
        renderStack(row.querySelector('[data-role="bar"]'), summary.counts);
        row.querySelector('[data-role="counts"]').textContent = countsText(summary.counts);
      }
      var cost = row.querySelector('[data-role="cost"]');
      cost.textContent = formatCost(summary.cost_usd, summary.unpriced_calls);
      cost.setAttribute("data-cost-usd", summary.cost_usd || "");
      renderRow(row);
    }

    /* Workflows per state (the page's search applied), re-read by the server after any
     * workflow was inserted or changed state. */
    function applyCounts(counts) {
      var all = 0;
      Object.keys(counts).forEach(function (name) {
        var n = Number(counts[name]) || 0;
        all += n;
        var element = document.querySelector('.state-filters [data-count="' + CSS.escape(name) + '"]');
        if (element && element.textContent !== String(n)) {
          element.textContent = String(n);
        }
      });
      var total = document.querySelector('.state-filters [data-count="all"]');
      if (total) {
        total.textContent = String(all);
      }
    }

    openSocket(config.socket, {
      message: function (data) {
        if (data.type === "workflows") {
          data.workflows.forEach(applySummary);
          if (data.counts) {
            applyCounts(data.counts);
          }
          if (data.snapshot) {
            document.body.setAttribute("data-snapshot", "received");
          }
        }
      },
    });

    window.setInterval(function () {
      rows.forEach(function (row) {
        if (!row.getAttribute("data-finished")) {
          renderRow(row);
        }
      });
    }, 1000);
  }

  if (config.kind === "workflow") {
    workflowPage();
  } else if (config.kind === "list") {
    listPage();
  } else if (config.kind === "timeline") {
    /* Drawn by the server as of loading: no socket; "Refresh" redraws it. */
    localiseTimes(document);
    setConnection("static", "as loaded");
    document.body.setAttribute("data-snapshot", "received");
  }
})();
