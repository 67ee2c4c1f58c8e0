// Live progress for the console and the privacy center: polls the page's own JSON while work runs.
// Served from /static (the pages' CSP allows scripts from this origin only; there is no inline script).
"use strict";

(function () {
  var INTERVAL_MS = 1000;

  function text(el, value) { if (el) { el.textContent = value; } }

  function pollRequest(box) {
    var url = box.getAttribute("data-poll");
    var running = box.getAttribute("data-running") === "true";
    var idle = 0;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          text(document.getElementById("status-text"), data.status_text || data.status);
          var bar = document.getElementById("run-progress");
          if (bar && typeof data.total === "number") {
            bar.max = Math.max(data.total, 1);
            bar.value = data.done;
            text(bar, data.done + " of " + data.total);
            text(document.getElementById("progress-count"), data.done + " of " + data.total);
          }
          (data.systems || []).forEach(function (s) {
            var row = document.querySelector("tr[data-system='" + s.system + "']");
            var body = document.querySelector("#systems tbody");
            if (!row && body) {  // a system the page did not know of yet
              row = document.createElement("tr");
              row.setAttribute("data-system", s.system);
              ["sys-name", "sys-status", "num sys-found", "", ""].forEach(function (cls) {
                var cell = document.createElement("td");
                if (cls) { cell.className = cls; }
                row.appendChild(cell);
              });
              text(row.querySelector(".sys-name"), s.system);
              body.appendChild(row);
            }
            if (row) {
              text(row.querySelector(".sys-status"), s.status.replace(/_/g, " "));
              text(row.querySelector(".sys-found"), String(s.found));
            }
          });
          if (data.job) {
            text(document.getElementById("job-message"), data.running ? "running…" : data.job.message);
          }
          running = data.running === true || data.status === "in_progress" || data.status === "pending";
          box.setAttribute("data-running", running ? "true" : "false");
          idle = running ? 0 : idle + 1;
        })
        .catch(function () { idle += 1; })
        .then(function () { if (running || idle < 3) { window.setTimeout(tick, INTERVAL_MS); } });
    }
    window.setTimeout(tick, INTERVAL_MS);
  }

  function pollJob(box) {
    var url = box.getAttribute("data-job");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) {
          if (!job) { return; }
          var list = document.getElementById("job-progress");
          if (list) {
            list.textContent = "";
            Object.keys(job.progress || {}).forEach(function (label) {
              var item = document.createElement("li");
              item.textContent = label + ": " + job.progress[label].done + " of " + job.progress[label].total;
              list.appendChild(item);
            });
          }
          text(document.getElementById("job-message"), job.state === "running" ? "running…" : job.message);
          box.setAttribute("data-running", job.state === "running" ? "true" : "false");
          if (job.state === "running") { window.setTimeout(tick, INTERVAL_MS); }
          else { box.setAttribute("data-finished", "true"); window.location.reload(); }
        })
        .catch(function () { window.setTimeout(tick, INTERVAL_MS * 3); });
    }
    if (box.getAttribute("data-running") === "true") { window.setTimeout(tick, INTERVAL_MS); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(pollRequest);
    document.querySelectorAll("[data-job]").forEach(pollJob);
  });
})();
