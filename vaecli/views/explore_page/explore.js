// vaecli explore: decodes latent codes with the models' own weights, in the browser.
// The data come from vaecli/explore.py as JSON; weights are base64 float32,
// each layer's weight stored transposed, (n_in, n_out).
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("vaecli-data").textContent);
  const H = DATA.latent_dim;
  const [ROWS, COLS] = DATA.image_shape;
  const D = ROWS * COLS;
  const EXTENT = DATA.extent; // the H = 2 plane spans [-EXTENT, EXTENT] on both axes
  const SLIDER_RANGE = 4;
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]; // matplotlib's tab10

  function bytes(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  // typed arrays read the platform's byte order, little-endian wherever browsers run
  const floats = (b64) => new Float32Array(bytes(b64).buffer);

  // The decoder of vaecli.model.VAE: Linear (ReLU Linear)*, then the sigmoid of decode_mean.
  // Sums run in float64 over float32 weights: within ~1e-6 of PyTorch's float32 result.
  class Decoder {
    constructor(layers) {
      this.layers = layers.map((l) => ({
        nIn: l.n_in, nOut: l.n_out, wt: floats(l.w), b: floats(l.b), y: new Float64Array(l.n_out),
      }));
      this.x = new Float64Array(H);
    }

    // z: H numbers -> `out` (D numbers): pixel means in [0, 1]
    decode(z, out) {
      let x = this.x;
      for (let i = 0; i < H; i++) x[i] = z[i];
      const last = this.layers.length - 1;
      for (let l = 0; l <= last; l++) {
        const { nIn, nOut, wt, b, y } = this.layers[l];
        for (let o = 0; o < nOut; o++) y[o] = b[o];
        // one contiguous weight row per input, so the inputs ReLU zeroed are skipped whole
        for (let i = 0; i < nIn; i++) {
          const xi = x[i];
          if (xi === 0) continue;
          const row = i * nOut;
          for (let o = 0; o < nOut; o++) y[o] += xi * wt[row + o];
        }
        if (l < last) for (let o = 0; o < nOut; o++) if (y[o] < 0) y[o] = 0;
        x = y;
      }
      for (let p = 0; p < D; p++) out[p] = 1 / (1 + Math.exp(-x[p]));
      return out;
    }
  }

  const runs = DATA.runs.map((r) => ({
    ...r,
    decoder: new Decoder(r.layers),
    pixels: new Float64Array(D),
    codes: r.codes ? floats(r.codes) : null, // (SAMPLES, H) mean codes of the sample images
    scatter: r.scatter ? { z: floats(r.scatter.z), labels: bytes(r.scatter.labels) } : null,
  }));
  const samples = Object.fromEntries(Object.entries(DATA.samples).map(([name, s]) => [
    name, { images: bytes(s.images), labels: s.labels, classes: s.classes },
  ]));

  const state = { z: new Float64Array(H), pinned: false, times: [], frames: 0, sample: null, reference: 0 };

  // ---- small DOM helpers
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }
  const fmt = (v) => { // a figure space for the sign keeps the column still; no "-0.00"
    const text = (Math.abs(v) < 0.005 ? 0 : v).toFixed(2);
    return text.startsWith("-") ? text : "\u2007" + text;
  };

  // a canvas sharp on high-density screens: drawing units are CSS pixels
  function hiDpiCanvas(width, height, cls) {
    const ratio = window.devicePixelRatio || 1;
    const canvas = el("canvas", { class: cls, width: Math.round(width * ratio), height: Math.round(height * ratio) });
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    canvas.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
    return canvas;
  }

  // ---- images: one canvas of ROWS x COLS pixels, scaled up by CSS (image-rendering: pixelated)
  function imageCanvas(scale, cls = "digit") {
    const canvas = el("canvas", { class: cls, width: COLS, height: ROWS });
    canvas.style.width = `${COLS * scale}px`;
    canvas.style.height = `${ROWS * scale}px`;
    return canvas;
  }
  function paint(canvas, values, max) { // values in [0, max]: white ink on black, as MNIST
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(COLS, ROWS);
    for (let p = 0; p < D; p++) {
      const v = Math.round((values[p] / max) * 255);
      image.data[4 * p] = image.data[4 * p + 1] = image.data[4 * p + 2] = v;
      image.data[4 * p + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  // ---- the H = 2 latent plane
  const PLANE = { size: 330, left: 44, right: 12, top: 12, bottom: 38 };
  PLANE.plot = PLANE.size - PLANE.left - PLANE.right;
  const toX = (z1) => PLANE.left + ((z1 + EXTENT) / (2 * EXTENT)) * PLANE.plot;
  const toY = (z2) => PLANE.top + ((EXTENT - z2) / (2 * EXTENT)) * PLANE.plot;
  const fromXY = (x, y) => [
    ((x - PLANE.left) / PLANE.plot) * 2 * EXTENT - EXTENT,
    EXTENT - ((y - PLANE.top) / PLANE.plot) * 2 * EXTENT,
  ];
  const inPlot = (x, y) => x >= PLANE.left && x <= PLANE.left + PLANE.plot && y >= PLANE.top && y <= PLANE.top + PLANE.plot;

  function tickStep(extent) {
    const raw = (2 * extent) / 8;
    const power = 10 ** Math.floor(Math.log10(raw));
    return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  }

  function drawPlaneBackground(run) {
    const height = PLANE.top + PLANE.plot + PLANE.bottom;
    const canvas = hiDpiCanvas(PLANE.size, height, "");
    const ctx = canvas.getContext("2d");
    const { left, top, plot } = PLANE;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, PLANE.size, height);
    const step = tickStep(EXTENT);
    const ticks = [];
    for (let t = Math.ceil(-EXTENT / step) * step; t <= EXTENT + 1e-9; t += step) ticks.push(t);
    ctx.strokeStyle = "#eee";
    ctx.lineWidth = 1;
    for (const t of ticks) {
      ctx.beginPath(); ctx.moveTo(toX(t), top); ctx.lineTo(toX(t), top + plot); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(left, toY(t)); ctx.lineTo(left + plot, toY(t)); ctx.stroke();
    }
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, plot, plot); ctx.clip();
    if (run.scatter) {
      const { z, labels } = run.scatter;
      ctx.globalAlpha = 0.55;
      for (let i = 0; i < labels.length; i++) {
        ctx.fillStyle = COLORS[labels[i] % 10];
        ctx.fillRect(toX(z[2 * i]) - 1.3, toY(z[2 * i + 1]) - 1.3, 2.6, 2.6);
      }
      ctx.globalAlpha = 1;
    }
    // the prior N(0, I): circles at 1, 2 and 3 standard deviations
    ctx.strokeStyle = "#333";
    ctx.setLineDash([4, 4]);
    ctx.fillStyle = "#333";
    ctx.font = "11px system-ui, sans-serif";
    const unit = plot / (2 * EXTENT);
    for (const k of [1, 2, 3]) {
      ctx.beginPath(); ctx.arc(toX(0), toY(0), k * unit, 0, 2 * Math.PI); ctx.stroke();
      ctx.fillText(`${k}\u03c3`, toX(0) + k * unit * Math.SQRT1_2 + 2, toY(0) - k * unit * Math.SQRT1_2 - 2);
    }
    ctx.restore();
    ctx.strokeStyle = "#555";
    ctx.strokeRect(left, top, plot, plot);
    ctx.fillStyle = "#333";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "center";
    for (const t of ticks) ctx.fillText(String(+t.toFixed(6)), toX(t), top + plot + 14);
    ctx.textAlign = "right";
    for (const t of ticks) ctx.fillText(String(+t.toFixed(6)), left - 5, toY(t) + 4);
    ctx.font = "13px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("z[0]", left + plot / 2, top + plot + 32);
    ctx.save();
    ctx.translate(13, top + plot / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText("z[1]", 0, 0);
    ctx.restore();
    return canvas;
  }

  function drawPlane(run) {
    const { canvas, background } = run.plane;
    const ratio = window.devicePixelRatio || 1;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(background, 0, 0);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const x = toX(state.z[0]);
    const y = toY(state.z[1]);
    ctx.save();
    ctx.beginPath(); ctx.rect(PLANE.left, PLANE.top, PLANE.plot, PLANE.plot); ctx.clip();
    ctx.strokeStyle = "rgba(0,0,0,0.35)";
    ctx.beginPath();
    ctx.moveTo(x, PLANE.top); ctx.lineTo(x, PLANE.top + PLANE.plot);
    ctx.moveTo(PLANE.left, y); ctx.lineTo(PLANE.left + PLANE.plot, y);
    ctx.stroke();
    ctx.beginPath(); ctx.arc(x, y, state.pinned ? 6 : 5, 0, 2 * Math.PI);
    ctx.fillStyle = state.pinned ? "#d62728" : "rgba(0,0,0,0.15)";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = state.pinned ? "#fff" : "#000";
    ctx.stroke();
    ctx.restore();
  }

  function planeEvents(canvas) {
    const at = (e) => {
      const rect = canvas.getBoundingClientRect();
      return [e.clientX - rect.left, e.clientY - rect.top];
    };
    canvas.addEventListener("pointermove", (e) => {
      const [x, y] = at(e);
      if (state.pinned || !inPlot(x, y)) return;
      setZ(fromXY(x, y), false);
    });
    canvas.addEventListener("pointerdown", (e) => {
      const [x, y] = at(e);
      if (!inPlot(x, y)) return;
      const onPin = state.pinned && Math.hypot(x - toX(state.z[0]), y - toY(state.z[1])) < 9;
      setZ(fromXY(x, y), !onPin); // a click pins (or moves the pin); a click on the pin frees it
    });
  }

  // ---- sliders for H > 2, ordered by mean KL (most informative first)
  const sliders = [];
  function dimensionOrder() {
    const kls = runs.filter((r) => r.kl).map((r) => r.kl);
    const mean = (d) => kls.reduce((s, kl) => s + kl[d], 0) / Math.max(1, kls.length);
    const order = [...Array(H).keys()];
    if (kls.length) order.sort((a, b) => mean(b) - mean(a) || a - b);
    return { order, kls, inactive: (d) => kls.length > 0 && kls.every((kl) => kl[d] < DATA.inactive_kl) };
  }

  function sliderPanel() {
    const { order, kls, inactive } = dimensionOrder();
    const panel = el("section", { class: "sliders", "aria-label": "latent code" });
    const heading = kls.length
      ? `z, one slider per dimension, most informative first (mean KL per test image, nats; inactive: KL < ${DATA.inactive_kl})`
      : "z, one slider per dimension (no test set given: activity unknown)";
    panel.append(el("h2", { text: heading }));
    for (const d of order) {
      const input = el("input", {
        type: "range", min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.01, value: 0,
        "aria-label": `z[${d}]`, "data-dim": d,
      });
      const value = el("output", { class: "value", text: fmt(0) });
      input.addEventListener("input", () => {
        const z = Array.from(state.z);
        z[d] = Number(input.value);
        setZ(z, false);
      });
      const kl = kls.length ? el("span", { class: "kl", text: kls.map((k) => k[d].toFixed(2)).join(" \u00b7 ") }) : null;
      const off = inactive(d);
      const row = el("div", { class: off ? "slider inactive" : "slider" },
        el("label", { text: `z[${d}]` }), input, value, kl,
        off ? el("span", { class: "tag", text: "inactive" }) : null);
      if (off) row.title = "KL < " + DATA.inactive_kl + " nats: the encoder does not use this dimension";
      sliders.push({ d, input, value });
      panel.append(row);
    }
    return panel;
  }

  // ---- controls shared by both modes
  const readout = el("span", { class: "readout" });
  const sampleView = el("span", { class: "sample" });

  function resetToPrior() { setZ(new Array(H).fill(0), true); state.sample = null; showSample(); }

  function randomTestImage() {
    const run = runs[state.reference];
    const sample = samples[run.dataset];
    const i = Math.floor(Math.random() * sample.labels.length);
    state.sample = { dataset: run.dataset, index: i };
    setZ(Array.from(run.codes.subarray(i * H, (i + 1) * H)), true);
    showSample();
  }

  function showSample() {
    sampleView.replaceChildren();
    if (!state.sample) return;
    const { dataset, index } = state.sample;
    const s = samples[dataset];
    const canvas = imageCanvas(2, "digit small");
    paint(canvas, s.images.subarray(index * D, (index + 1) * D), 255);
    sampleView.append(canvas, el("span", { text: `test image: ${s.classes[s.labels[index]]}` }));
    sampleView.title = `z is the mean code of this test image under ${runs[state.reference].name}`;
  }

  function controls() {
    const bar = el("section", { class: "controls" });
    bar.append(el("button", { type: "button", id: "reset", onclick: resetToPrior, text: "prior mean (z = 0)" }));
    const coded = runs.map((r, i) => [r, i]).filter(([r]) => r.codes);
    const random = el("button", { type: "button", id: "random", onclick: randomTestImage, text: "random test image" });
    if (!coded.length) {
      random.disabled = true;
      random.title = "no test set was given when the page was made";
    }
    bar.append(random);
    if (coded.length > 1) {
      const select = el("select", { "aria-label": "whose encoder gives the code" },
        ...coded.map(([r, i]) => el("option", { value: i, text: r.name })));
      select.addEventListener("change", () => { state.reference = Number(select.value); });
      bar.append(el("label", { class: "reference", text: "code from " }, select));
    }
    if (coded.length) state.reference = coded[0][1];
    bar.append(sampleView, readout);
    return bar;
  }

  // ---- one card per run: (plane,) decoded image, caption
  function card(run) {
    const scale = H === 2 ? 6 : 7;
    run.image = imageCanvas(scale);
    const figure = el("figure", { class: "decoded" }, run.image, el("figcaption", { text: "decoded mean p(x | z)" }));
    const caption = el("div", { class: "caption" },
      el("strong", { text: run.name }), el("span", { text: run.setup }), el("span", { text: run.metrics }));
    const node = el("article", { class: "run" });
    if (H === 2) {
      const background = drawPlaneBackground(run);
      const canvas = hiDpiCanvas(PLANE.size, PLANE.top + PLANE.plot + PLANE.bottom, "plane");
      run.plane = { canvas, background };
      planeEvents(canvas);
      const left = el("div", { class: "plane-box" }, canvas);
      if (run.scatter) {
        const classes = samples[run.dataset].classes;
        left.append(el("div", { class: "legend" }, ...classes.map((name, k) =>
          el("span", {}, el("i", { style: `background:${COLORS[k]}` }), name))));
      } else {
        left.append(el("div", { class: "legend", text: "no test codes (no test set given)" }));
      }
      node.append(left, el("div", { class: "side" }, figure, caption));
    } else {
      node.append(figure, caption);
    }
    return node;
  }

  // ---- the one way z changes: set it, decode with every model, draw
  function setZ(z, pinned) {
    for (let i = 0; i < H; i++) state.z[i] = z[i];
    if (pinned !== undefined) state.pinned = pinned;
    render();
  }

  function render() {
    const start = performance.now();
    for (const run of runs) run.decoder.decode(state.z, run.pixels);
    state.times.push(performance.now() - start);
    if (state.times.length > 30) state.times.shift();
    state.frames++;
    for (const run of runs) {
      paint(run.image, run.pixels, 1);
      if (run.plane) drawPlane(run);
    }
    for (const s of sliders) {
      s.input.value = Math.max(-SLIDER_RANGE, Math.min(SLIDER_RANGE, state.z[s.d]));
      s.value.textContent = fmt(state.z[s.d]);
    }
    if (H === 2) {
      readout.textContent = `z = (${state.z[0].toFixed(2)}, ${state.z[1].toFixed(2)}) \u00b7 ` +
        (state.pinned ? "pinned (click the pin or press Esc to free it)" : "move over a plane, click to pin");
    } else {
      readout.textContent = `|z| = ${Math.hypot(...state.z).toFixed(2)}`;
    }
    // a mean over recent frames: one frame's time is a few timer ticks, and noisy
    const ms = state.times.reduce((a, b) => a + b, 0) / state.times.length;
    footerTime.textContent = `decoding takes ${ms.toFixed(2)} ms per frame`;
  }

  // ---- build the page
  const footerTime = el("span");
  const app = document.getElementById("app");
  app.replaceChildren();
  const lede = document.getElementById("lede");
  lede.textContent += H === 2
    ? " Move the pointer over a latent plane: each model decodes the z under it."
    : " Move the sliders: each model decodes the same z.";
  app.append(controls());
  for (const note of DATA.notes) app.append(el("p", { class: "note", text: note }));
  const cards = el("section", { class: "runs" }, ...runs.map(card));
  app.append(H === 2 ? cards : el("div", { class: "wide" }, sliderPanel(), cards));
  document.getElementById("footer").append(
    footerTime,
    el("span", { text: ` (${runs.length} model${runs.length > 1 ? "s" : ""}, mean of the last 30 frames) \u00b7 made by vaecli ${DATA.version} \u00b7 works offline: nothing is loaded from anywhere` }),
  );
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.pinned) { state.pinned = false; render(); }
  });
  // warm up the JIT, so the first frames under the pointer are as quick as the rest
  const scratch = new Float64Array(D);
  for (let i = 0; i < 10; i++) for (const run of runs) run.decoder.decode(new Array(H).fill(i / 5 - 1), scratch);
  render();

  // for tests and the curious: read back what the page decoded
  window.vaecli = {
    latentDim: H,
    runs: runs.map((r) => r.name),
    getZ: () => Array.from(state.z),
    setZ: (z, pinned) => setZ(z, pinned),
    pinned: () => state.pinned,
    frames: () => state.frames,
    pixels: (r) => Array.from(runs[r].pixels),
    decode: (r, z) => Array.from(runs[r].decoder.decode(z, new Float64Array(D))),
    // mean milliseconds to decode one frame (every model once) over n random codes
    benchmark(n = 200) {
      const out = new Float64Array(D);
      const zs = Array.from({ length: n }, () => Array.from({ length: H }, () => 4 * Math.random() - 2));
      const start = performance.now();
      for (const z of zs) for (const run of runs) run.decoder.decode(z, out);
      return (performance.now() - start) / n;
    },
  };
})();
