// cifarlab web page: load the exported ONNX model, classify a picture, test shift invariance.
// Contract of the model (cifarlab.export): input "pixels" uint8 [N, 32, 32, 3] raw RGB, output "logits" [N, k].
"use strict";

const SIZE = 32, MAX_SHIFT = 8;
const state = { session: null, classes: null, source: null /* Uint8Array 32*32*3 */, sweep: null };
window.cifarlab = state; // read by the browser test

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.style.display = message ? "block" : "none";
}

function setStatus(text) { $("status").textContent = text; }

ort.env.wasm.numThreads = 1;                 // no cross-origin isolation needed
ort.env.wasm.wasmPaths = new URL("node_modules/onnxruntime-web/dist/", document.baseURI).href;

// ---- model ---------------------------------------------------------------------------------------------
async function loadModel(modelBytes, classesJson, label) {
  state.session = null;
  $("sweep").disabled = true;
  let session;
  try {
    session = await ort.InferenceSession.create(modelBytes, { executionProviders: ["wasm"] });
  } catch (e) {
    throw new Error(`${label}: not a model onnxruntime can open (${e.message || e})`);
  }
  const names = classesJson && Array.isArray(classesJson.names) ? classesJson.names : null;
  if (!names || names.length < 2) {
    throw new Error("classes.json must hold {\"names\": [...]} with at least two class names (cifarlab writes it beside model.onnx)");
  }
  // The input must be [N, 32, 32, 3]: probe it with one blank image.
  const inputName = session.inputNames[0];
  let out;
  try {
    const probe = new ort.Tensor("uint8", new Uint8Array(SIZE * SIZE * 3), [1, SIZE, SIZE, 3]);
    out = (await session.run({ [inputName]: probe }))[session.outputNames[0]];
  } catch (e) {
    throw new Error(`${label}: the model's input is not [N, 32, 32, 3] uint8 pixels, as cifarlab exports it (${e.message || e})`);
  }
  if (out.dims.length !== 2 || out.dims[0] !== 1) {
    throw new Error(`${label}: expected logits of shape [N, classes], got [${out.dims}]`);
  }
  if (out.dims[1] !== names.length) {
    throw new Error(`classes.json names ${names.length} classes but the model outputs ${out.dims[1]}: they do not belong together`);
  }
  state.session = session;
  state.classes = names;
  setStatus(`model loaded: ${names.length} classes (${names.join(", ")})`);
  showError("");
  await refresh();
}

async function fileBytes(input) { return new Uint8Array(await input.files[0].arrayBuffer()); }

async function loadFromPickers() {
  if (!$("model-file").files.length || !$("classes-file").files.length) return;
  try {
    let classes;
    try { classes = JSON.parse(await $("classes-file").files[0].text()); }
    catch (e) { throw new Error(`classes.json is not valid JSON (${e.message})`); }
    await loadModel(await fileBytes($("model-file")), classes, $("model-file").files[0].name);
  } catch (e) { showError(e.message); setStatus("no model loaded"); }
}

async function loadFromUrl() {
  const params = new URLSearchParams(location.search);
  if (!params.get("model")) return;
  try {
    const [m, c] = await Promise.all([fetch(params.get("model")), fetch(params.get("classes") || "classes.json")]);
    if (!m.ok) throw new Error(`could not fetch the model ${params.get("model")} (HTTP ${m.status})`);
    if (!c.ok) throw new Error(`could not fetch the class names ${params.get("classes")} (HTTP ${c.status})`);
    let classes;
    try { classes = await c.json(); } catch (e) { throw new Error(`classes file is not valid JSON (${e.message})`); }
    await loadModel(new Uint8Array(await m.arrayBuffer()), classes, params.get("model"));
  } catch (e) { showError(e.message); setStatus("no model loaded"); }
}

// ---- image ---------------------------------------------------------------------------------------------
async function loadImage(file) {
  let bitmap;
  try { bitmap = await createImageBitmap(file); }
  catch (e) { showError(`${file.name}: this image cannot be decoded (${e.message || "unsupported or corrupt file"})`); return; }
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = SIZE;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, SIZE, SIZE);  // the whole picture, squeezed to 32x32 like CIFAR
  const rgba = ctx.getImageData(0, 0, SIZE, SIZE).data;
  const rgb = new Uint8Array(SIZE * SIZE * 3);
  for (let i = 0; i < SIZE * SIZE; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = rgba[i * 4 + c];
  setSource(rgb);
}

function setSource(rgb) {
  state.source = rgb;
  showError("");
  $("dx").value = $("dy").value = 0;
  refresh();
}

// Shift by (dx, dy) pixels; pixels shifted in from outside repeat the nearest border pixel.
function shifted(src, dx, dy) {
  const out = new Uint8Array(SIZE * SIZE * 3);
  const clamp = (v) => Math.min(SIZE - 1, Math.max(0, v));
  for (let y = 0; y < SIZE; y++) for (let x = 0; x < SIZE; x++) {
    const s = (clamp(y - dy) * SIZE + clamp(x - dx)) * 3, d = (y * SIZE + x) * 3;
    out[d] = src[s]; out[d + 1] = src[s + 1]; out[d + 2] = src[s + 2];
  }
  return out;
}

function draw(rgb) {
  const ctx = $("view").getContext("2d");
  const img = ctx.createImageData(SIZE, SIZE);
  for (let i = 0; i < SIZE * SIZE; i++) {
    img.data[i * 4] = rgb[i * 3]; img.data[i * 4 + 1] = rgb[i * 3 + 1]; img.data[i * 4 + 2] = rgb[i * 3 + 2];
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// ---- inference ------------------------------------------------------------------------------------------
function softmax(row) {
  const m = Math.max(...row);
  const e = row.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

// Probabilities for a batch of 32x32x3 images, in one run (the exported batch axis is dynamic).
async function classify(images) {
  const data = new Uint8Array(images.length * SIZE * SIZE * 3);
  images.forEach((im, i) => data.set(im, i * SIZE * SIZE * 3));
  const input = new ort.Tensor("uint8", data, [images.length, SIZE, SIZE, 3]);
  const out = (await state.session.run({ [state.session.inputNames[0]]: input }))[state.session.outputNames[0]];
  const k = out.dims[1], logits = Array.from(out.data);
  return images.map((_, i) => softmax(logits.slice(i * k, (i + 1) * k)));
}

async function refresh() {
  const dx = +$("dx").value, dy = +$("dy").value;
  $("dx-val").textContent = dx; $("dy-val").textContent = dy;
  if (!state.source) return;
  const img = shifted(state.source, dx, dy);
  draw(img);
  if (!state.session) return;
  const [p] = await classify([img]);
  const top = p.indexOf(Math.max(...p));
  state.prediction = { dx, dy, probs: p, top, name: state.classes[top] };
  $("top").textContent = `${state.classes[top]} — ${(100 * p[top]).toFixed(1)}%` + (dx || dy ? ` (shifted ${dx}, ${dy})` : "");
  $("bars").innerHTML = p.map((v, i) => `<div class="bar${i === top ? " top" : ""}"><span class="name">${state.classes[i]}</span>` +
    `<span class="track"><span class="fill" style="display:block;width:${(100 * v).toFixed(1)}%"></span></span>` +
    `<span>${(100 * v).toFixed(1)}%</span></div>`).join("");
  $("sweep").disabled = false;
}

async function runSweep() {
  if (!state.session || !state.source) return;
  const shifts = [];
  for (let s = -MAX_SHIFT; s <= MAX_SHIFT; s++) shifts.push(s);
  const images = [...shifts.map((s) => shifted(state.source, s, 0)), ...shifts.map((s) => shifted(state.source, 0, s))];
  const probs = await classify(images);
  const base = probs[MAX_SHIFT];                     // the unshifted image
  const top = base.indexOf(Math.max(...base));
  const n = shifts.length;
  state.sweep = {
    shifts, top, name: state.classes[top],
    horizontal: probs.slice(0, n).map((p) => p[top]),
    vertical: probs.slice(n).map((p) => p[top]),
    topHorizontal: probs.slice(0, n).map((p) => state.classes[p.indexOf(Math.max(...p))]),
    topVertical: probs.slice(n).map((p) => state.classes[p.indexOf(Math.max(...p))]),
  };
  plotSweep(state.sweep);
}

function plotSweep(sw) {
  const c = $("sweep-plot"), ctx = c.getContext("2d");
  const W = c.width, H = c.height, L = 50, R = 150, T = 30, B = 40;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px sans-serif"; ctx.fillStyle = "#222"; ctx.strokeStyle = "#999";
  const X = (s) => L + ((s + MAX_SHIFT) / (2 * MAX_SHIFT)) * (W - L - R);
  const Y = (p) => T + (1 - p) * (H - T - B);
  ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  for (const p of [0, 0.5, 1]) ctx.fillText(p.toFixed(1), L - 28, Y(p) + 4);
  for (const s of [-8, -4, 0, 4, 8]) ctx.fillText(String(s), X(s) - 6, H - B + 16);
  ctx.fillText("shift (pixels)", (L + W - R) / 2 - 35, H - 6);
  ctx.fillText(`P(${sw.name})`, 4, T - 14);
  for (const [key, color, label] of [["horizontal", "#4a90d9", "horizontal shift"], ["vertical", "#d9534f", "vertical shift"]]) {
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.beginPath();
    sw[key].forEach((p, i) => { const x = X(sw.shifts[i]), y = Y(p); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.stroke();
    sw[key].forEach((p, i) => { ctx.beginPath(); ctx.arc(X(sw.shifts[i]), Y(p), 2.5, 0, 7); ctx.fill(); });
    ctx.fillText(label, W - R + 10, key === "horizontal" ? T + 10 : T + 28);
  }
}

// ---- wiring -------------------------------------------------------------------------------------------
$("model-file").addEventListener("change", loadFromPickers);
$("classes-file").addEventListener("change", loadFromPickers);
$("image-file").addEventListener("change", (e) => e.target.files.length && loadImage(e.target.files[0]));
$("dx").addEventListener("input", refresh);
$("dy").addEventListener("input", refresh);
$("sweep").addEventListener("click", runSweep);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) loadImage(e.dataTransfer.files[0]);
});
loadFromUrl();
