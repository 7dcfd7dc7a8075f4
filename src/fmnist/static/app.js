// The page's logic: send a photo or a drawing to POST /v1/predict and show what came back. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
let classes = [];

// Why a request got no answer, in words a user can act on; a cancelled one stays an AbortError, which is not shown.
function noAnswer(err, signal) {
  if (signal?.timedOut || err?.name === "TimeoutError") {
    const limit = signal?.limitMs ? ` in ${Math.round(signal.limitMs / 1000)} s` : " in time";
    return new Error(`the server did not answer${limit}: busy or stuck? try again`);
  }
  if (err?.name === "AbortError" || signal?.aborted) return new DOMException("cancelled", "AbortError");
  return new Error("the server did not answer: is 'fmnist serve' still running?");
}

// A signal that aborts after `ms` with a TimeoutError, also where AbortSignal.timeout is missing (Safari before 16;
// there it is marked `timedOut`: where abort() takes no reason, before 15.4, the mark alone tells a timeout from a
// cancel).
function timeLimit(ms) {
  let signal;
  if (AbortSignal.timeout) {
    signal = AbortSignal.timeout(ms);
  } else {
    const controller = new AbortController();
    setTimeout(() => {
      controller.signal.timedOut = true;
      controller.abort(new DOMException("timed out", "TimeoutError"));
    }, ms);
    signal = controller.signal;
  }
  signal.limitMs = ms; // for the message
  return signal;
}

// `signal` (a newer upload cancels this one) with a time limit of its own: a server that never answers is told.
function limited(signal, ms) {
  const limit = timeLimit(ms);
  const controller = new AbortController();
  controller.signal.limitMs = ms;
  const follow = (source) => {
    if (controller.signal.aborted) return; // the first to abort tells why
    controller.signal.timedOut = source === limit;
    controller.abort(source.reason);
  };
  if (signal.aborted) follow(signal);
  signal.addEventListener("abort", () => follow(signal), { once: true });
  limit.addEventListener("abort", () => follow(limit), { once: true });
  return controller.signal;
}

// GET or POST one of the API's routes: its JSON body, or an Error saying why not, in words a user can act on.
async function call(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw noAnswer(err, options.signal);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    if (options.signal?.aborted) throw noAnswer(options.signal.reason, options.signal); // not the body's fault
    // otherwise not JSON: a proxy's error page, say
  }
  if (!response.ok) {
    throw new Error(body?.error ?? `the server answered ${response.status} ${response.statusText}`.trim());
  }
  if (body === null) throw new Error(`the server's answer (${response.status}) was not JSON`);
  return body;
}

// The model's details, asked for once; asked again at the next upload if they could not be read.
let modelDetails = null;
let maxBodyBytes = Infinity; // the server's limit on a request, from the model's details
function loadModel() {
  // A server that never answers must not hold every upload back: give up after 10 s, and ask again next time.
  modelDetails ??= call("v1/model", { signal: timeLimit(10000) }).then((info) => {
    classes = info.classes;
    maxBodyBytes = info.max_body_bytes ?? Infinity;
    if (info.unsure_below !== undefined) { // fmnist serve --unsure-below
      $("unsure").textContent = `The model is unsure: no class reaches ${Math.round(100 * info.unsure_below)}%.`;
    }
    const accuracy = info.metrics ? `test accuracy ${(100 * info.metrics.test_accuracy).toFixed(1)}%, ` : "";
    const served = info.run ? `run ${info.run}: ` : "a model without its run: ";
    $("model").textContent = `${served}${accuracy}model ${info.model_sha256.slice(0, 12)}`;
  }).catch((err) => {
    modelDetails = null;
    $("model").textContent = `could not read the model's details: ${err.message}`;
    throw new Error(`could not read the model's details: ${err.message}`);
  });
  return modelDetails;
}

// Each upload or stroke gets a number; an answer that arrives after a newer request was sent is dropped, and the
// older request is cancelled (the server stops working on a request whose client has gone).
let latest = 0;
let inFlight = null;
let answering = null; // "photo" or "drawing": what the latest request, and the answer on screen, are for

// POST /v1/predict. An answer or a map takes well under a second once the body is there: given up after 30 s, and
// the time to send `bytes` at 16 KiB/s, the slowest line the server waits for (fmnist serve: 30 s and a second more
// per 16 KiB of a body).
function post(query, body, bytes, signal, headers = {}) {
  const ms = 30000 + bytes / 16.384;
  return call(`v1/predict?${query}`, { method: "POST", body, headers, signal: limited(signal, ms) });
}

async function predict(blob, name, query, signal) {
  try { // else a file the browser cannot read fails the upload, which reads as the server's fault
    await blob.slice(0, 1).arrayBuffer();
  } catch {
    throw new Error(`cannot read ${name}: a folder, or a file changed or removed since it was picked`);
  }
  const form = new FormData();
  form.append("files", blob, name);
  return post(query, form, blob.size, signal);
}

// The map of the 28x28 input the model saw, sent back as JSON rather than the photo again (a few kB, whatever the
// photo's size, and never read from a file that may have changed since): its grey levels 0-255, which the server
// reads as pixels; an input whose brightest level is 1 as floats, since integers no higher than 1 are refused there
// as [0, 1] values that lost their decimal point. An input off the 256 levels (an .npy of any floats, which the
// answer gives to 4 decimals) is sent as its file again, so that the map is of that very input.
const MAP_QUERY = "top_k=1&explain=true";

function explain(pixels, blob, name, signal) {
  const values = pixels.flat();
  const levels = values.map((value) => Math.round(255 * value));
  if (levels.some((level, i) => Math.abs(level / 255 - values[i]) > 0.0001)) {
    return predict(blob, name, MAP_QUERY, signal);
  }
  const body = JSON.stringify({ inputs: [Math.max(...levels) === 1 ? levels.map((level) => level / 255) : levels] });
  return post(MAP_QUERY, body, body.length, signal, { "Content-Type": "application/json" });
}

// The answer first; the occlusion map (some 627 forward passes) follows in a second request, so it never delays it.
// `input` may be a promise of the image: its number is taken first, so that a Clear while a drawing's PNG is made
// drops its answer.
async function classify(input, name, source) {
  const request = ++latest;
  answering = source;
  let shown = false; // this input's answer is on screen: an error of its map alone leaves it there
  inFlight?.abort();
  const controller = inFlight = new AbortController();
  $("error").hidden = true;
  $("answer").classList.add("pending"); // the previous answer stays greyed until this one replaces it
  $("status").textContent = `classifying ${name}…`;
  document.body.classList.add("busy");
  try {
    const blob = await input;
    await loadModel(); // the bars are drawn in the classes' order
    if (blob.size + 1024 + 3 * name.length > maxBodyBytes) { // the form's own lines, and the name in UTF-8
      const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
      throw new Error(`${name} is ${mib(blob.size)}: the server takes at most ${mib(maxBodyBytes)} a request ` +
                      "(fmnist serve --max-upload-mb); pick a smaller image");
    }
    const answer = await predict(blob, name, `top_k=${classes.length}&include_pixels=true`, controller.signal);
    if (request !== latest) return;
    const prediction = answer.predictions[0];
    show(prediction, answer.elapsed_ms);
    shown = true;
    if (source === "photo") $("answer").scrollIntoView({ block: "nearest" }); // below the panels on a phone
    $("answer").classList.remove("pending");
    $("status").textContent = "finding where its answer came from…";
    const explained = await explain(prediction.pixels, blob, name, controller.signal);
    if (request !== latest) return;
    drawEvidence(prediction.pixels, explained.predictions[0].evidence);
    $("timing").textContent += `; its map in ${explained.elapsed_ms.toFixed(1)} ms`;
    $("evidence").dataset.input = prediction.input;
  } catch (err) {
    if (request !== latest) return;
    if (!shown) forgetAnswer(); // an earlier input's answer left on screen would pass for this one's
    const reason = err.message.includes(name) ? err.message : `${name}: ${err.message}`;
    $("error").textContent = shown ? `no map, only the answer: ${reason}` : reason;
    $("error").hidden = false;
  } finally {
    if (request === latest) {
      document.body.classList.remove("busy");
      $("answer").classList.remove("pending");
      $("status").textContent = "";
      inFlight = null;
    }
  }
}

// Wipe the shown answer; with `cancel`, the request still on its way too.
function forgetAnswer(cancel = false) {
  if (cancel) {
    latest++;
    inFlight?.abort();
    inFlight = null;
    document.body.classList.remove("busy");
    $("answer").classList.remove("pending");
    $("status").textContent = "";
    $("error").hidden = true;
  }
  blank($("seen"));
  blank($("evidence"));
  $("timing").textContent = "";
  delete $("timing").dataset.input;
  $("bars").replaceChildren();
  $("label").textContent = "";  // shown as a dash (style.css), read as nothing
  $("drawn").textContent = "—";
  $("unsure").hidden = true;
}

function blank(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  delete canvas.dataset.input;
  if (canvas.id === "evidence") $("evidence-size").textContent = "";
}

function drawSeen(pixels) {
  const context = $("seen").getContext("2d");
  const image = context.createImageData(28, 28);
  pixels.flat().forEach((value, i) => {
    const grey = Math.round(255 * value);
    image.data.set([grey, grey, grey, 255], 4 * i);
  });
  context.putImageData(image, 0, 0);
}

// A map whose largest change of probability is under 1% is faded in proportion, as in the report and `predict --show`
// (FAINT_BELOW in explain.py): the float noise of an answer no patch moves is not drawn as evidence.
const FAINT_BELOW = 0.01;

// The input again, tinted red where blanking the pixels lowers the top class's probability and blue where it raises it.
function drawEvidence(pixels, evidence) {
  const context = $("evidence").getContext("2d");
  const image = context.createImageData(28, 28);
  const values = evidence.flat();
  const scale = Math.max(...values.map(Math.abs), FAINT_BELOW);
  pixels.flat().forEach((value, i) => {
    const grey = 255 * value;
    const weight = 0.85 * Math.min(1, Math.abs(values[i]) / scale);
    const tint = values[i] > 0 ? [220, 40, 40] : [40, 90, 220];
    image.data.set([...tint.map((c) => Math.round(grey + weight * (c - grey))), 255], 4 * i);
  });
  context.putImageData(image, 0, 0);
  $("evidence-size").textContent = mapPeak(values);
}

// The map's peak, the largest mean change of probability at a pixel, as the report writes it over each map
// (plots.map_peak).
function mapPeak(values) {
  const largest = Math.max(0, ...values.map(Math.abs));
  return `peak ${largest < 0.001 ? "< 0.1" : (100 * largest).toFixed(1)}%`;
}

// One short of certain never reads 100.0%, as in the command line's answers.
function percent(probability) {
  const text = (100 * probability).toFixed(1);
  return probability < 1 && text === "100.0" ? ">99.9%" : `${text}%`;
}

function show(prediction, elapsedMs) {
  drawSeen(prediction.pixels);
  blank($("evidence"));
  const best = prediction.top[0];
  $("label").textContent = `${best.class} ${percent(best.probability)}`;
  $("drawn").textContent = answering === "drawing" ? $("label").textContent : "—";
  $("unsure").hidden = !prediction.unsure;
  $("timing").textContent = `${prediction.input}: answered in ${elapsedMs.toFixed(1)} ms on the server`;
  $("timing").dataset.input = prediction.input;
  const byIndex = new Map(prediction.top.map((entry) => [entry.index, entry.probability]));
  const bars = $("bars");
  bars.replaceChildren(...classes.map((name, index) => {
    const probability = byIndex.get(index) ?? 0;
    const row = document.createElement("li");
    row.dataset.class = name;
    row.dataset.probability = probability;
    if (index === best.index) row.classList.add("best");
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * probability).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(probability);
    row.append(label, track, value);
    return row;
  }));
}

function showPhoto(file) {
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.removeAttribute("src");
  preview.alt = file ? `the picked photo, ${file.name}` : "";
  if (file) preview.src = URL.createObjectURL(file);
  preview.hidden = !file;
  $("drop-text").hidden = Boolean(file);
  $("note").hidden = true;
  if (!file) $("file-input").value = ""; // the file input names no photo the page no longer shows
}

function pickFile(files) {
  const file = files[0];
  if (!file) { // a link or text dragged from another page, say
    $("note").textContent = "that was no file: drop an image file, or click to pick one";
    $("note").hidden = false;
    return;
  }
  showPhoto(file);
  $("note").textContent = files.length > 1 ? `${files.length} files given: the page classifies one, ${file.name}` : "";
  $("note").hidden = files.length < 2;
  classify(file, file.name, "photo");
}

function setUpDrop() {
  const drop = $("drop");
  const input = $("file-input");
  input.addEventListener("change", () => pickFile(input.files));
  // Emptied as the picker opens, so that picking the same file again (to retry, say) classifies it again.
  input.addEventListener("click", () => { input.value = ""; });
  // A file dropped anywhere on the page is classified: beside the box, the browser would open it in the page's place
  // and lose what it shows; on the file input, it would not say a file that is no image was refused.
  // What is dragged from the page itself (its picture, some text) is no input: dropped, it does nothing.
  let fromPage = false;
  document.addEventListener("dragstart", () => { fromPage = true; });
  document.addEventListener("dragend", () => { fromPage = false; });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (fromPage) return;
    const files = event.dataTransfer?.files ?? [];
    // The file input names a dropped file too, as it does one picked ("No file chosen" beside a photo misleads).
    if (files.length) $("file-input").files = files;
    pickFile(files);
  });
  // A file that is no image leaves no broken picture: the server's reason says what it is. An array has no picture
  // to show: its name is said instead.
  $("preview").addEventListener("error", () => {
    if (!$("preview").getAttribute("src")) return;
    const name = $("file-input").files[0]?.name ?? "";
    const given = $("note").hidden ? "" : `${$("note").textContent}; `; // "3 files given: ...", kept
    showPhoto(null);
    if (name.toLowerCase().endsWith(".npy")) {
      $("note").textContent = `${given}${name}: an array, with no picture to show here: what the model saw is under ` +
        "Prediction";
      $("note").hidden = false;
    }
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", (event) => {
    if (!drop.contains(event.relatedTarget)) drop.classList.remove("over"); // not when over the box's own text
  });
}

function setUpPad() {
  const pad = $("pad");
  const context = pad.getContext("2d");
  const clear = () => { context.fillStyle = "#fff"; context.fillRect(0, 0, pad.width, pad.height); };
  clear();
  context.lineWidth = 18;
  context.lineCap = context.lineJoin = "round";
  context.strokeStyle = "#111";
  let drawing = null; // the pointer drawing: one at a time, so a second finger draws no stray line
  const point = (event) => { // within the border, which the canvas' own pixels lie inside
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left - pad.clientLeft) * pad.width / pad.clientWidth,
            (event.clientY - box.top - pad.clientTop) * pad.height / pad.clientHeight];
  };
  pad.addEventListener("contextmenu", (event) => event.preventDefault());
  pad.addEventListener("pointerdown", (event) => {
    if (drawing !== null || !event.isPrimary || event.button !== 0) return; // a right click draws nothing
    drawing = event.pointerId;
    pad.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...point(event));
    context.lineTo(...point(event));
    context.stroke();
  });
  pad.addEventListener("pointermove", (event) => {
    if (event.pointerId !== drawing) return;
    context.lineTo(...point(event));
    context.stroke();
  });
  const strokeEnded = (event) => { // lifted, or cancelled by the browser (a touch taken for a gesture): classified
    if (event.pointerId !== drawing) return;
    drawing = null;
    showPhoto(null); // the answer is the drawing's now: a photo left in its panel would read as the one answered
    classify(new Promise((resolve) => pad.toBlob(resolve, "image/png")), "drawing.png", "drawing");
  };
  pad.addEventListener("pointerup", strokeEnded);
  pad.addEventListener("pointercancel", strokeEnded);
  pad.addEventListener("lostpointercapture", strokeEnded); // its pointerup lost: the pen must not draw on hover
  $("clear").addEventListener("click", () => { // also mid-stroke (a finger taps it while a pen draws): the stroke ends
    drawing = null;
    context.beginPath(); // else the next stroke would draw the cleared one again
    clear();
    if (answering === "drawing") forgetAnswer(true); // its answer, or the one on its way; a photo's stays
  });
}

setUpDrop();
setUpPad();
loadModel().catch(() => {}); // shown in the header; the next upload asks again
