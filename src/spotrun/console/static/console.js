// spotrun console: small behaviours htmx does not cover, and the charts (Chart.js).
// No inline scripts anywhere (the pages' Content-Security-Policy forbids them); data for
// the charts comes from the pages' /data endpoints as JSON.
"use strict";

(function () {
  const COLORS = {
    waiting: "#b0b7c3",
    running: "#2e7d32",
    resumed: "#1565c0",
    notice: "#f9a825",
    interrupted: "#c62828",
    ended: "#616161",
  };
  const PALETTE = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#c62828"];

  // the spot checkbox reveals the maximum wait; the algorithm source picks its field
  function wireForm(root) {
    root.querySelectorAll("[data-reveals]").forEach((box) => {
      const target = document.getElementById(box.dataset.reveals);
      const sync = () => { if (target) target.hidden = !box.checked; };
      box.addEventListener("change", sync);
      sync();
    });
    root.querySelectorAll("[data-toggles=algorithm-source]").forEach((select) => {
      const sync = () => {
        document.querySelectorAll("[data-source]").forEach((el) => {
          el.hidden = el.dataset.source !== select.value;
        });
      };
      select.addEventListener("change", sync);
      sync();
    });
  }

  function seconds(value) {
    if (value < 60) return value.toFixed(0) + " s";
    if (value < 3600) return (value / 60).toFixed(1) + " min";
    return (value / 3600).toFixed(2) + " h";
  }

  let gantt = null;
  function drawGantt(canvas, data) {
    const t = data.timeline;
    const datasets = t.kinds.map((kind) => ({
      label: kind,
      backgroundColor: COLORS[kind],
      borderColor: COLORS[kind],
      borderWidth: 1,
      minBarLength: 3,
      barPercentage: 0.7,
      categoryPercentage: 0.9,
      grouped: false,
      data: t.spans.filter((s) => s.kind === kind).map((s) => ({
        x: [s.start, Math.max(s.end, s.start)], y: t.rows[s.row], label: s.label,
      })),
    }));
    const holder = canvas.parentElement;
    holder.style.height = (60 + 34 * t.rows.length) + "px";
    if (gantt) {
      gantt.data.labels = t.rows;
      gantt.data.datasets = datasets;
      gantt.update("none");
      return;
    }
    gantt = new Chart(canvas, {
      type: "bar",
      data: { labels: t.rows, datasets },
      options: {
        indexAxis: "y",
        animation: false,
        maintainAspectRatio: false,
        parsing: { xAxisKey: "x", yAxisKey: "y" },
        scales: {
          x: { type: "linear", min: 0, title: { display: true, text: "seconds since the job was created" } },
          y: { stacked: true },
        },
        plugins: {
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const [a, b] = ctx.raw.x;
                return `${ctx.raw.label}: ${seconds(a)} → ${seconds(b)} (${seconds(b - a)})`;
              },
            },
          },
        },
      },
    });
  }

  const metricCharts = new Map();
  function drawMetrics(holder, metrics) {
    const names = Object.keys(metrics).sort();
    const empty = document.getElementById("no-metrics");
    if (empty) empty.hidden = names.length > 0;
    names.forEach((name, i) => {
      const points = metrics[name].map(([x, y]) => ({ x, y }));
      let chart = metricCharts.get(name);
      if (chart) {
        chart.data.datasets[0].data = points;
        chart.update("none");
        return;
      }
      const box = document.createElement("div");
      box.className = "chart metric";
      const canvas = document.createElement("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", name);
      canvas.dataset.metric = name;
      box.appendChild(canvas);
      holder.appendChild(box);
      chart = new Chart(canvas, {
        type: "line",
        data: { datasets: [{ label: name, data: points, borderColor: PALETTE[i % PALETTE.length], pointRadius: 2, tension: 0 }] },
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: { x: { type: "linear", title: { display: true, text: "seconds since created" } } },
        },
      });
      metricCharts.set(name, chart);
    });
  }

  function pollJob() {
    const canvas = document.getElementById("gantt");
    if (!canvas) return;
    const metrics = document.getElementById("metric-charts");
    const tick = () => {
      fetch(canvas.dataset.source, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
        .then((data) => {
          drawGantt(canvas, data);
          drawMetrics(metrics, data.metrics);
          canvas.dataset.drawn = String(data.timeline.spans.length);
          if (data.active) setTimeout(tick, 2000);
        })
        .catch(() => setTimeout(tick, 5000));
    };
    tick();
  }

  let objective = null;
  function pollTuning() {
    const canvas = document.getElementById("objective");
    if (!canvas) return;
    const tick = () => {
      fetch(canvas.dataset.source, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
        .then((data) => {
          const better = data.type === "Minimize" ? Math.min : Math.max;
          let best = null;
          const bestLine = data.points.map((p) => {
            best = best === null ? p.value : better(best, p.value);
            return { x: p.time, y: best };
          });
          const trials = data.points.map((p) => ({ x: p.time, y: p.value, trial: p.trial }));
          if (objective) {
            objective.data.datasets[0].data = trials;
            objective.data.datasets[1].data = bestLine;
            objective.update("none");
          } else {
            objective = new Chart(canvas, {
              data: {
                datasets: [
                  { type: "scatter", label: data.metric + " per trial", data: trials, backgroundColor: "#1565c0" },
                  { type: "line", label: "best so far", data: bestLine, borderColor: "#2e7d32", stepped: true, pointRadius: 0 },
                ],
              },
              options: {
                animation: false,
                maintainAspectRatio: false,
                scales: { x: { type: "linear", title: { display: true, text: "seconds since the tuning job was created" } } },
                plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.raw.trial || "best"}: ${ctx.raw.y}` } } },
              },
            });
          }
          canvas.dataset.drawn = String(data.points.length);
          if (data.active) setTimeout(tick, 3000);
        })
        .catch(() => setTimeout(tick, 5000));
    };
    tick();
  }

  // follow the log: keep the view at the bottom while "Follow" is checked
  function followLogs() {
    const logs = document.getElementById("logs");
    const follow = document.getElementById("follow");
    if (!logs || !follow) return;
    document.body.addEventListener("htmx:afterSwap", () => {
      if (follow.checked) logs.scrollTop = logs.scrollHeight;
    });
  }

  // the Stop and Interrupt buttons sit outside the polled summary (htmx drops the answer
  // to a request whose element was swapped out meanwhile); the summary says what they may do
  function syncActions() {
    const summary = document.getElementById("summary");
    if (!summary) return;
    const stop = document.getElementById("stop");
    const interrupt = document.getElementById("interrupt");
    if (stop) stop.disabled = summary.dataset.canStop !== "true";
    if (interrupt) interrupt.disabled = summary.dataset.canInterrupt !== "true";
  }

  document.addEventListener("DOMContentLoaded", () => {
    syncActions();
    document.body.addEventListener("htmx:afterSettle", syncActions);
    wireForm(document);
    pollJob();
    pollTuning();
    followLogs();
    document.body.addEventListener("htmx:afterSwap", (e) => wireForm(e.target));
  });
})();
