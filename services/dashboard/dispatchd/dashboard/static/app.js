// Live updates: the job-event feed (/events, server-sent events fed by WatchJobs) and a job's logs.
// Light touch: the pages are complete without this; it only keeps them current without reloading.
"use strict";
(function () {
  const live = document.getElementById("live");

  function feed(params, onJob, onGap, onRefused) {
    const source = new EventSource("/events?" + new URLSearchParams(params).toString());
    source.addEventListener("ready", () => { if (live) live.hidden = false; });
    source.addEventListener("job", (message) => {
      const event = JSON.parse(message.data);
      document.dispatchEvent(new CustomEvent("dispatchd:job", { detail: event }));
      onJob(event);
    });
    source.addEventListener("gap", () => onGap());
    source.addEventListener("error", (message) => {
      if (live) live.hidden = true;
      if (message.data) { // refused by the control plane: say so and stop retrying
        source.close();
        const problem = JSON.parse(message.data);
        if (live) { live.hidden = false; live.textContent = "live feed refused: " + problem.code; live.className = "badge failed"; }
        if (onRefused) onRefused();
      }
    });
    return source;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function badge(status) {
    const td = document.createElement("td");
    td.className = "status";
    const span = document.createElement("span");
    span.className = "badge " + status;
    span.textContent = status;
    td.appendChild(span);
    return td;
  }

  // The jobs list: new jobs appear on top (first page only), known rows change status in place.
  const table = document.querySelector("[data-live-jobs]");
  if (table) {
    const body = table.tBodies[0];
    const params = {};
    if (table.dataset.status) params.status = table.dataset.status;
    if (table.dataset.type) params.type = table.dataset.type;
    feed(params, (event) => {
      let row = document.getElementById("job-" + event.job_id);
      if (row) {
        row.replaceChild(badge(event.status), row.querySelector("td.status"));
        row.className = "status-" + event.status + " flash";
        return;
      }
      // A new job, or (with a status filter: the server sends only events leaving jobs in that
      // status) a job that now matches; either belongs on top of the first page.
      if (table.dataset.firstPage !== "yes" || (event.kind !== "submitted" && !table.dataset.status)) return;
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      row = document.createElement("tr");
      row.id = "job-" + event.job_id;
      row.className = "status-" + event.status + " flash";
      const link = document.createElement("a");
      link.href = "/jobs/" + event.job_id;
      const code = document.createElement("code");
      code.textContent = event.job_id;
      link.appendChild(code);
      const first = document.createElement("td");
      first.appendChild(link);
      const created = event.at ? new Date(event.at * 1000).toISOString().replace("T", " ") : "";
      [first, cell(event.job_type), badge(event.status), cell(String(event.attempt)), cell(""), cell(created), cell(""), cell("", "error-cell")]
        .forEach((td) => row.appendChild(td));
      body.insertBefore(row, body.firstChild);
    }, () => window.location.reload());
  }

  // Re-read this page and replace `container` (found by `selector`) with its fresh copy, keeping
  // the elements named in `keep` as they are; one read at a time, a request during one queues one more.
  function rereader(container, selector, keep, after) {
    let busy = false, again = false;
    const reread = () => {
      if (busy) { again = true; return; }
      busy = true;
      fetch(window.location.pathname, { credentials: "same-origin" })
        .then((reply) => reply.text())
        .then((html) => {
          const fresh = new DOMParser().parseFromString(html, "text/html").querySelector(selector);
          if (!fresh) return;
          keep.forEach((id) => {
            const current = document.getElementById(id);
            const stale = fresh.querySelector("#" + id);
            if (current && stale) stale.replaceWith(current);
          });
          container.replaceChildren(...fresh.childNodes);
          Object.assign(container.dataset, fresh.dataset);
          if (after) after();
        })
        .finally(() => { busy = false; if (again) { again = false; reread(); } });
    };
    return reread;
  }

  // One job: re-read the page (status, executions, errors) when an event for it arrives.
  const jobPage = document.querySelector("[data-live-job]");
  if (jobPage) {
    // Keep the streaming log view (and its state line) and the action buttons (a click on one is
    // never lost to a re-read swapping it out) as they are, while the fresh page still offers them.
    const refresh = rereader(jobPage, "[data-live-job]", ["logs", "logs-state", "cancel", "redrive"]);
    feed({ job_id: jobPage.dataset.liveJob }, refresh, refresh);
  }

  // A workflow run: re-read it when one of its steps' jobs has an event, until the run ends.
  // A caller refused the feed (a submitter) re-reads it every few seconds instead, while active.
  const runPage = document.querySelector("[data-live-run]");
  if (runPage && runPage.dataset.active === "yes") {
    let source = null, timer = null;
    const stopWhenDone = () => {
      if (runPage.dataset.active === "yes") return;
      if (source) source.close();
      if (timer) clearInterval(timer);
    };
    const refresh = rereader(runPage, "[data-live-run]", ["cancel-run"], stopWhenDone);
    const ours = (event) => runPage.dataset.stepJobs.split(" ").includes(event.job_id);
    source = feed({}, (event) => { if (ours(event)) refresh(); }, refresh, () => {
      timer = setInterval(refresh, 1000 * Number(runPage.dataset.fallbackSeconds));
    });
    source.addEventListener("ready", refresh); // what happened between the page and the subscription
  }

  // A job's logs: the stored lines are on the page; the rest streams in until the job ends.
  const logs = document.getElementById("logs");
  if (logs && logs.dataset.follow) {
    let last = 0;
    logs.querySelectorAll("[data-log-id]").forEach((span) => { last = Math.max(last, Number(span.dataset.logId)); });
    const url = logs.dataset.follow + (logs.dataset.after ? "?after=" + encodeURIComponent(logs.dataset.after) : "");
    const source = new EventSource(url);
    const say = (text) => { const state = document.getElementById("logs-state"); if (state) state.textContent = text; };
    source.addEventListener("line", (message) => {
      const line = JSON.parse(message.data);
      if (line.log_id <= last) return; // a reconnect replays from the page's position
      last = line.log_id;
      const span = document.createElement("span");
      span.dataset.logId = line.log_id;
      span.textContent = "[" + line.attempt + " " + line.stream + "] " + line.message.replace(/\n$/, "") + "\n";
      logs.appendChild(span);
      logs.scrollTop = logs.scrollHeight;
    });
    source.addEventListener("end", () => {
      source.close();
      say(last ? "complete" : "none were written");
    });
    source.addEventListener("error", (message) => {
      if (message.data) { source.close(); say(JSON.parse(message.data).message); }
    });
  }

  // Pages without their own feed still show that live updates are available.
  if (!table && !jobPage && document.querySelector("[data-live-chart]")) {
    feed({}, () => {}, () => {});
  }
})();
