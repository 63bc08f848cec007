// The history page's charts (Apache ECharts, served by the plugin itself: the UI works offline).
// Data comes from the page (#history-data, built by erfnet_ui.views.chart_data): runs on a time axis,
// per target fps and mIoU per run (null where the cell did not run), CANN versions as spans.
// Each target gets its own grid and y scale, so a 13 fps cpu and a 400 fps NPU both read; CANN
// versions are shaded bands with a labelled line where each begins; a red line marks where the CANN probe
// saw a host's toolkit change; both charts zoom and pan together.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("history-data").textContent);
  var script = document.currentScript;
  var runUrl = script ? script.getAttribute("data-run-url") : "runs/";
  // Okabe-Ito, colour-blind safe; a target keeps its colour in both charts.
  var PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
  var GRID_H = 120, GAP = 46, TOP = 36, BOTTOM = 70;
  var times = data.runs.map(function (r) { return Date.parse(r[0]); });

  function fmt(v, digits) { return v === null || v === undefined ? "–" : v.toFixed(digits); }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  function tooltip(params) {
    var k = (Array.isArray(params) ? params[0] : params).dataIndex;
    var run = data.runs[k];
    if (!run) { return ""; }
    var lines = ["<b>" + esc(run[0].slice(0, 16).replace("T", " ")) + " UTC</b>",
                 "run " + esc(run[1]), "CANN " + esc(run[2])];
    data.targets.forEach(function (t) {
      var s = data.series[t], status = s.status[k];
      var text = status && status !== "ok" ? status : fmt(s.fps[k], 2) + " fps, mIoU " + fmt(s.miou[k], 2) + " %";
      lines.push(esc(t) + ": " + esc(text));
    });
    return lines.join("<br>");
  }

  // Alternate shading per CANN version; the line at each version's first run carries its name.
  function bandAreas() {
    return data.bands.map(function (b, j) {
      return [{xAxis: Date.parse(b.start), itemStyle: {color: j % 2 ? "rgba(74,85,104,0.10)" : "rgba(74,85,104,0.02)"}},
              {xAxis: Date.parse(b.end)}];
    });
  }

  function bandLines(labelled) {
    return {
      silent: true, symbol: "none", animation: false,
      lineStyle: {color: "#4a5568", type: "dashed", width: 1},
      label: {show: labelled, position: "insideEndTop", formatter: "{b}", fontSize: 11, color: "#2d3748"},
      data: data.bands.map(function (b) { return {name: "CANN " + b.cann, xAxis: Date.parse(b.start)}; })
        .concat((data.upgrades || []).map(function (u) {  // the probe saw a host's toolkit change here
          return {name: u.label, xAxis: Date.parse(u.time), lineStyle: {color: "#C53030", type: "solid", width: 1.5},
                  label: {show: labelled, position: "insideEndBottom", formatter: "{b}", fontSize: 11, color: "#C53030"}};
        }))
    };
  }

  function layout(n) {
    var grids = [], xAxes = [], yAxes = [], titles = [];
    for (var i = 0; i < n; i++) {
      var top = TOP + i * (GRID_H + GAP);
      grids.push({left: 70, right: 30, top: top, height: GRID_H});
      xAxes.push({type: "time", gridIndex: i, min: times[0], max: times[times.length - 1],
                  axisLabel: {hideOverlap: true, fontSize: 11}, splitNumber: 8});
      titles.push({text: data.targets[i], left: 70, top: top - 26, textStyle: {fontSize: 13, fontWeight: 600,
                   color: PALETTE[i % PALETTE.length]}});
    }
    return {grids: grids, xAxes: xAxes, yAxes: yAxes, titles: titles, height: TOP + n * (GRID_H + GAP) + BOTTOM};
  }

  function option(metric) {
    var n = data.targets.length, L = layout(n), series = [], all = [];
    data.targets.forEach(function (t, i) {
      all.push(i);
      var values = data.series[t][metric];
      // No axis name: the heading above the chart gives the unit, the grid's title the target.
      var y = {type: "value", gridIndex: i, scale: true, splitNumber: 3, axisLabel: {fontSize: 11}};
      if (metric === "miou") {  // keep the reference and its band in view
        var lo = data.reference - data.tolerance, hi = data.reference + data.tolerance;
        y.min = function (v) { return Math.floor(Math.min(v.min, lo) - 0.5); };
        y.max = function (v) { return Math.ceil(Math.max(v.max, hi) + 0.5); };
      }
      L.yAxes.push(y);
      var s = {name: t, type: "line", xAxisIndex: i, yAxisIndex: i, showSymbol: false, symbolSize: 5,
               connectNulls: false, lineStyle: {width: 1.5}, color: PALETTE[i % PALETTE.length],
               data: values.map(function (v, k) { return [times[k], v]; }),
               markArea: {silent: true, data: bandAreas()}, markLine: bandLines(i === 0)};
      series.push(s);
      if (metric === "miou") {
        series.push({name: t + " reference", type: "line", xAxisIndex: i, yAxisIndex: i, data: [], silent: true,
                     markArea: {silent: true, itemStyle: {color: "rgba(39,103,73,0.12)"},
                                data: [[{yAxis: data.reference - data.tolerance}, {yAxis: data.reference + data.tolerance}]]},
                     markLine: {silent: true, symbol: "none", lineStyle: {color: "#276749", width: 1.5},
                                label: {position: "insideStartTop", formatter: "reference {c}", fontSize: 10},
                                data: [{yAxis: data.reference}]}});
      }
    });
    return {
      animation: false, title: L.titles, grid: L.grids, xAxis: L.xAxes, yAxis: L.yAxes, series: series,
      tooltip: {trigger: "axis", formatter: tooltip, confine: true, axisPointer: {type: "line"}},
      axisPointer: {link: [{xAxisIndex: "all"}]},
      dataZoom: [{type: "inside", xAxisIndex: all, filterMode: "none"},
                 {type: "slider", xAxisIndex: all, filterMode: "none", bottom: 12, height: 22}],
      height: L.height
    };
  }

  function draw(id, metric) {
    var el = document.getElementById(id);
    var opt = option(metric);
    el.style.height = opt.height + "px";
    delete opt.height;
    var chart = echarts.init(el, null, {renderer: "svg"});
    chart.setOption(opt);
    chart.on("click", function (p) {  // a point opens its run
      var run = data.runs[p.dataIndex];
      if (run && p.seriesType === "line") { window.location.href = runUrl + encodeURIComponent(run[1]); }
    });
    return chart;
  }

  if (!data.runs.length) {
    ["chart-fps", "chart-miou"].forEach(function (id) {
      document.getElementById(id).textContent = "No measured runs in this range.";
    });
    return;
  }
  var charts = {fps: draw("chart-fps", "fps"), miou: draw("chart-miou", "miou")};
  echarts.connect([charts.fps, charts.miou]);
  window.addEventListener("resize", function () { charts.fps.resize(); charts.miou.resize(); });
  window.erfnetCharts = charts;  // for the browser test and the console
})();
