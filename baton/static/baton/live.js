/* baton live pages: apply a snapshot, then deltas, from the page's WebSocket.
 *
 * Plain JavaScript, no build step. Everything that came from users (workflow and step
 * names, reasons, errors) is written with textContent, never as HTML.
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
    var detail = document.getElementById("baton-detail");

    Array.prototype.forEach.call(document.querySelectorAll("#baton-graph .node"), function (element) {
      var node = {
        id: Number(element.getAttribute("data-step-id")),
        element: element,
        stateText: element.querySelector(".state"),
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

    function applyWorkflow(summary) {
      workflow = summary;
      stateBadge.setAttribute("data-state", summary.state);
      stateBadge.textContent = summary.state;
      header.setAttribute("data-state", summary.state);
      renderDuration();
    }

    /* Keep each step's highest version: events from several workers may cross. */
    function applyStep(step) {
      var node = nodes.get(step.id);
      if (!node || !(step.version > node.version)) {
        return false;
      }
      var wasDone = Boolean(TERMINAL[node.state]);
      node.version = step.version;
      node.state = step.state;
      node.step = step;
      node.element.setAttribute("data-state", step.state);
      node.element.setAttribute("data-version", String(step.version));
      node.stateText.textContent = stateLabel(step);
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
