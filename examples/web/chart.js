// A small live line chart on <canvas>: one series per reading, the last
// WINDOW_MS of points, auto-scaled. No library needed.
"use strict";

class LiveChart {
  static WINDOW_MS = 60_000;
  static COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  constructor(canvas, legend) {
    this.canvas = canvas;
    this.legend = legend;
    this.series = new Map(); // name -> {color, points: [{t, v}]}
    this.pending = false;
  }

  add(name, value, time = Date.now()) {
    let s = this.series.get(name);
    if (!s) {
      s = { color: LiveChart.COLORS[this.series.size % LiveChart.COLORS.length], points: [] };
      this.series.set(name, s);
      const item = document.createElement("span");
      item.textContent = name;
      item.style.setProperty("--color", s.color);
      item.dataset.series = name;
      this.legend.appendChild(item);
    }
    s.points.push({ t: time, v: value });
    const oldest = time - LiveChart.WINDOW_MS;
    while (s.points.length > 2 && s.points[0].t < oldest) s.points.shift();
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
  }

  pointCount() {
    let n = 0;
    for (const s of this.series.values()) n += s.points.length;
    return n;
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    const { width, height } = this.canvas;
    const pad = { left: 48, right: 12, top: 12, bottom: 24 };
    ctx.clearRect(0, 0, width, height);
    const all = [...this.series.values()].flatMap((s) => s.points);
    if (all.length === 0) return;
    const now = Math.max(...all.map((p) => p.t));
    // Up to the last minute, at least 10 s: a fresh chart is not squeezed to the right.
    const oldest = Math.min(...all.map((p) => p.t));
    const span = Math.min(LiveChart.WINDOW_MS, Math.max(10_000, now - oldest));
    const t0 = now - span;
    let lo = Math.min(...all.map((p) => p.v));
    let hi = Math.max(...all.map((p) => p.v));
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const margin = (hi - lo) * 0.1;
    lo -= margin; hi += margin;
    const x = (t) => pad.left + ((t - t0) / span) * (width - pad.left - pad.right);
    const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);

    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e5e9ee";
    ctx.fillStyle = "#5a6776";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.left, y(v));
      ctx.lineTo(width - pad.right, y(v));
      ctx.stroke();
      ctx.fillText(v.toFixed(1), 4, y(v) + 4);
    }
    ctx.fillText(`-${Math.round(span / 1000)} s`, pad.left, height - 6);
    ctx.fillText("now", width - pad.right - 22, height - 6);

    ctx.lineWidth = 2;
    for (const s of this.series.values()) {
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.beginPath();
      s.points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p.v)) : ctx.lineTo(x(p.t), y(p.v))));
      ctx.stroke();
      const last = s.points[s.points.length - 1];
      ctx.beginPath();
      ctx.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}
