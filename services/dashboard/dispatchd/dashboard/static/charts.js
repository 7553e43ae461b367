// Charts of the overview page, drawn with the vendored uPlot (static/vendor/uplot, pinned).
"use strict";
(function () {
  const palette = { submitted: "#2f5bd3", succeeded: "#1f8f4e", failed: "#c0392b", canceled: "#8a94a6" };

  function draw(element, data, names, title) {
    const width = Math.max(480, element.clientWidth || 900);
    const series = [{}].concat(names.map((name) => ({ label: name, stroke: palette[name] || "#b7791f", width: 2 })));
    return new uPlot({ title: title, width: width, height: 240, series: series, scales: { x: { time: true } } }, data, element);
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
