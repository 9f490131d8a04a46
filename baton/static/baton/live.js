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
  };

  function duration(startIso, endIso) {
    if (!startIso) {
      return "—";
    }
    var end = endIso ? Date.parse(endIso) : Date.now();
    return formatSeconds(Math.max(0, (end - Date.parse(startIso)) / 1000));
  }

  function formatTime(iso) {
    if (!iso) {
      return "—";
    }
    var date = new Date(iso);
    if (isNaN(date.getTime())) {
      return iso;
    }
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
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

  /* ------------------------------------------------------------------ workflow page */
  function workflowPage() {
    var workflow = config.workflow;
    var nodes = new Map();
    var done = 0;
    var selected = null;
    var header = document.getElementById("baton-workflow");
    var stateBadge = header.querySelector('[data-role="workflow-state"]');
    var progressText = header.querySelector('[data-role="progress"]');
    var progressBar = header.querySelector('[data-role="bar"]');
    var durationText = header.querySelector('[data-role="duration"]');
    var costText = header.querySelector('[data-role="cost"]');
    var budgetText = header.querySelector('[data-role="budget"]');
    var reasonFact = header.querySelector('[data-role="reason-fact"]');
    var reasonText = header.querySelector('[data-role="reason"]');
    var detail = document.getElementById("baton-detail");
    /* The workflow's running totals: both only grow, so the highest seen is the newest
     * (events from several workers may cross). */
    var totals = { cost: null, unpriced: 0 };

    Array.prototype.forEach.call(document.querySelectorAll("#baton-graph .node"), function (element) {
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

    function stateLabel(step) {
      if (step.state === "retryable" || (step.state === "executing" && step.attempt > 1)) {
        return step.state + " · try " + step.attempt + "/" + step.max_attempts;
      }
      return step.state;
    }

    function renderProgress() {
      progressText.textContent = done + "/" + nodes.size;
      progressBar.max = nodes.size;
      progressBar.value = done;
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
    }

    function nodeTitle(step) {
      var unpriced = Number(step.unpriced_calls) || 0;
      if ((step.cost_usd === null || step.cost_usd === undefined) && !unpriced) {
        return step.name;
      }
      return step.name + " · cost " + formatCost(step.cost_usd, unpriced);
    }

    /* Keep each step's highest version: events from several workers may cross. */
    function applyStep(step) {
      var node = nodes.get(step.id);
      if (!node) {
        return false;
      }
      if (step.version === node.version && node.step.id === undefined) {
        /* The snapshot of a step the page drew at this version: keep its fields. */
        node.step = step;
        node.title.textContent = nodeTitle(step);
        return false;
      }
      if (!(step.version > node.version)) {
        return false;
      }
      var wasDone = Boolean(TERMINAL[node.state]);
      node.version = step.version;
      node.state = step.state;
      node.step = step;
      node.element.setAttribute("data-state", step.state);
      node.element.setAttribute("data-version", String(step.version));
      node.stateText.textContent = stateLabel(step);
      node.title.textContent = nodeTitle(step);
      done += (TERMINAL[step.state] ? 1 : 0) - (wasDone ? 1 : 0);
      if (selected === node) {
        fillDetail(Object.assign({}, node.detail || {}, step));
      }
      return true;
    }

    function fillDetail(step) {
      var fields = {
        name: step.name,
        state: step.state,
        attempt: step.attempt === undefined ? "—" : step.attempt + " of " + step.max_attempts,
        started_at: formatTime(step.started_at),
        finished_at: formatTime(step.finished_at),
        duration: step.started_at ? duration(step.started_at, step.finished_at) : "—",
        cost: step.unpriced_calls === undefined ? "—"
          : formatCost(step.cost_usd, step.unpriced_calls),
        task_name: step.task_name || "—",
        reason: step.reason || "—",
        last_error: step.last_error || "—",
      };
      Object.keys(fields).forEach(function (key) {
        var element = detail.querySelector('[data-field="' + key + '"]');
        if (element) {
          element.textContent = fields[key];
        }
      });
      detail.querySelector('[data-field="state"]').setAttribute("data-state", step.state);
    }

    function showDetail(node) {
      if (selected) {
        selected.element.classList.remove("selected");
      }
      selected = node;
      node.element.classList.add("selected");
      detail.hidden = false;
      fillDetail(Object.assign({}, node.detail || {}, node.step));
      socket.send({ action: "detail", step_id: node.id });
    }

    detail.querySelector('[data-role="close"]').addEventListener("click", function () {
      detail.hidden = true;
      if (selected) {
        selected.element.classList.remove("selected");
        selected = null;
      }
    });

    var socket = openSocket(config.socket, {
      message: function (data) {
        if (data.type === "snapshot") {
          data.steps.forEach(applyStep);
          applyWorkflow(data.workflow);
          renderProgress();
          document.body.setAttribute("data-snapshot", "received");
        } else if (data.type === "step") {
          if (applyStep(data.step)) {
            renderProgress();
          }
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
        }
      },
    });

    renderProgress();
    applyTotals(workflow.cost_usd, workflow.unpriced_calls);
    window.setInterval(function () {
      if (!workflow.finished_at) {
        renderDuration();
      }
    }, 1000);
  }

  /* ---------------------------------------------------------------------- list page */
  function listPage() {
    var body = document.querySelector("#baton-workflows tbody");
    var rows = new Map();
    var uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

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
      var bar = document.createElement("progress");
      bar.setAttribute("data-role", "bar");
      progress.appendChild(bar);
      progress.appendChild(document.createTextNode(" "));
      var text = document.createElement("span");
      text.setAttribute("data-role", "progress");
      progress.appendChild(text);
      var time = document.createElement("time");
      time.setAttribute("datetime", summary.created_at);
      time.textContent = formatTime(summary.created_at);
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
        if (config.page !== 1) {
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
      var bar = row.querySelector('[data-role="bar"]');
      bar.max = summary.step_count;
      bar.value = doneSteps;
      var cost = row.querySelector('[data-role="cost"]');
      cost.textContent = formatCost(summary.cost_usd, summary.unpriced_calls);
      cost.setAttribute("data-cost-usd", summary.cost_usd || "");
      renderRow(row);
    }

    openSocket(config.socket, {
      message: function (data) {
        if (data.type === "workflows") {
          data.workflows.forEach(applySummary);
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
  }
})();
