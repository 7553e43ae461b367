// Charts of the overview page, drawn with the vendored uPlot (static/vendor/uplot, pinned).
"use strict";
(function () {
  const palette = { submitted: "#2f5bd3", succeeded: "#1f8f4e", failed: "#c0392b", canceled: "#8a94a6" };

  // `span`: seconds of time shown, ending at the newest sample (default: what the data covers).
  function draw(element, data, names, title, span) {
    const width = Math.max(480, element.clientWidth || 900);
    const others = ["#b7791f", "#7b3fb5", "#0f8b8d", "#d35400", "#2f5bd3", "#1f8f4e"];
    const series = [{}].concat(names.map((name, i) => ({ label: name, stroke: palette[name] || others[i % others.length], width: 2 })));
    const x = { time: true };
    if (span) x.range = (u, min, max) => [max - span, max + 5];
    return new uPlot({ title: title, width: width, height: 240, series: series, scales: { x: x } }, data, element);
  }

  const holder = document.getElementById("throughput-chart");
  const source = document.getElementById("throughput-data");
  if (holder && source) {
    const raw = JSON.parse(source.textContent);
    const names = ["submitted", "succeeded", "failed", "canceled"];
    const data = [raw.minutes].concat(names.map((n) => raw[n]));
    const plot = draw(holder, data, names, "");
    // Live: each job event counts into its minute (see app.js, which dispatches them).
    document.addEventListener("dispatchd:job", (event) => {
      const detail = event.detail;
      const column = names.indexOf(detail.chart_series);
      if (column < 0) return;
      const at = Math.floor(detail.at / 60) * 60;
      let index = data[0].indexOf(at);
      if (index < 0) {
        data[0].push(at);
        for (let i = 1; i < data.length; i++) data[i].push(0);
        index = data[0].length - 1;
      }
      data[column + 1][index] += 1;
      plot.setData(data);
    });
  }
  window.dispatchdCharts = { draw: draw };
})();

// Queue depth per job type, sampled while the queues page is open.
(function () {
  const holder = document.getElementById("depth-chart");
  const source = document.getElementById("queues-data");
  if (!holder || !source) return;
  const every = Number(holder.dataset.sampleSeconds) * 1000;
  const types = [];
  const data = [[]];
  function add(at, queues) {
    queues.forEach((q) => {
      if (types.indexOf(q.job_type) < 0) { types.push(q.job_type); data.push(data[0].map(() => 0)); }
    });
    data[0].push(at);
    types.forEach((type, i) => {
      const found = queues.find((q) => q.job_type === type);
      data[i + 1].push(found ? found.depth : 0);
    });
  }
  add(Date.now() / 1000, JSON.parse(source.textContent));
  let plot = null;
  function redraw() {
    if (plot) plot.destroy();
    plot = window.dispatchdCharts.draw(holder, data, types, "", 600);
  }
  redraw();
  setInterval(() => {
    fetch("/queues.json", { credentials: "same-origin" })
      .then((reply) => reply.json())
      .then((body) => { add(body.at, body.queues); redraw(); });
  }, every);
})();
