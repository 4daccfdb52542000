// Recognize page: a photo (boxes and names drawn over it), the webcam (frames posted to the
// server a few times a second, names over faces), and "same person?" for two photos.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function label(face) {
    const score = face.score !== null && face.score !== undefined ? ` ${(face.score * 100).toFixed(0)}%` : "";
    return `${face.name}${score}${face.lookalike ? " (look-alike?)" : ""}`;
  }

  /** Draw boxes and names over `stage`; `media` shows a `width`×`height` image. */
  function drawFaces(stage, media, result) {
    for (const old of stage.querySelectorAll(".face-box")) old.remove();
    const scale = media.clientWidth / result.width;
    for (const face of result.faces) {
      const node = facelab.el("div", { class: `face-box ${face.name === "unknown" ? "unknown" : "known"}` },
        facelab.el("span", {}, label(face)));
      facelab.placeBox(node, face.box, scale);
      stage.append(node);
    }
  }

  function listNames(list, result) {
    list.replaceChildren(...result.faces.map((f) =>
      facelab.el("li", { class: f.name === "unknown" ? "unknown" : "known" }, label(f))));
  }

  // -- a photo --------------------------------------------------------------------------------
  const drop = $("recognize-drop");
  const fileInput = $("recognize-file");
  const stage = $("recognize-stage");
  const image = $("recognize-image");
  let lastResult = null;

  async function recognizePhoto(file) {
    if (!file) return;
    stage.hidden = false;
    image.src = URL.createObjectURL(file);
    for (const old of stage.querySelectorAll(".face-box")) old.remove();
    $("recognize-names").replaceChildren();
    $("recognize-summary").textContent = "recognizing…";
    const form = new FormData();
    form.append("file", file, file.name);
    const started = performance.now();
    try {
      lastResult = await facelab.api("POST", "/api/recognize", form);
      const ms = Math.round(performance.now() - started);
      const n = lastResult.faces.length;
      $("recognize-summary").textContent = n
        ? `${n} face${n === 1 ? "" : "s"} · ${ms} ms · model ${lastResult.model}`
        : `no face found · ${ms} ms`;
      listNames($("recognize-names"), lastResult);
      if (lastResult.closed_set_warning) {
        const badge = document.createElement("span");
        badge.className = "badge warn";
        badge.textContent = "closed set: strangers get names";
        badge.title = lastResult.closed_set_warning;
        $("recognize-summary").append(" ", badge);
      }
      if (image.complete) drawFaces(stage, image, lastResult);
    } catch (error) {
      $("recognize-summary").textContent = error.message;
      facelab.toast(error.message, "error");
    }
  }
  image.addEventListener("load", () => { if (lastResult) drawFaces(stage, image, lastResult); });
  window.addEventListener("resize", () => { if (lastResult && !stage.hidden) drawFaces(stage, image, lastResult); });
  fileInput.addEventListener("change", () => { recognizePhoto(fileInput.files[0]); fileInput.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    recognizePhoto(e.dataTransfer.files[0]);
  });

  // -- the webcam -----------------------------------------------------------------------------
  const video = $("camera");
  const cameraStage = $("camera-stage");
  const status = $("camera-status");
  const frame = document.createElement("canvas");
  let stream = null;
  let running = false;

  async function sendFrame() {
    if (!running) return;
    const width = video.videoWidth;
    const height = video.videoHeight;
    if (!width || !height) { setTimeout(sendFrame, 200); return; }
    // Frames are shrunk to 640 px: faces across a room are still found, and uploads stay small.
    const scale = Math.min(1, 640 / Math.max(width, height));
    frame.width = Math.round(width * scale);
    frame.height = Math.round(height * scale);
    frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.8));
    const form = new FormData();
    form.append("file", blob, "frame.jpg");
    const started = performance.now();
    try {
      const result = await facelab.api("POST", "/api/recognize", form);
      if (!running) return;
      drawFaces(cameraStage, video, result);
      listNames($("camera-names"), result);
      const n = result.faces.length;
      status.textContent = `${n} face${n === 1 ? "" : "s"} · ${Math.round(performance.now() - started)} ms a frame`;
    } catch (error) {
      status.textContent = error.message;
      if (error.status === 404 || error.status === 401) { stop(); return; }
    }
    // One frame in flight at a time: the server sets the pace, never a queue of stale frames.
    setTimeout(sendFrame, 150);
  }

  async function start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status.textContent = "this browser gives no camera here (a camera needs https or localhost)";
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (error) {
      status.textContent = `no camera: ${error.message}`;
      return;
    }
    video.srcObject = stream;
    cameraStage.hidden = false;
    running = true;
    $("camera-start").disabled = true;
    $("camera-stop").disabled = false;
    status.textContent = "starting…";
    sendFrame();
  }

  function stop() {
    running = false;
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    video.srcObject = null;
    for (const old of cameraStage.querySelectorAll(".face-box")) old.remove();
    cameraStage.hidden = true;
    $("camera-start").disabled = false;
    $("camera-stop").disabled = true;
  }

  $("camera-start").addEventListener("click", start);
  $("camera-stop").addEventListener("click", () => { stop(); status.textContent = "stopped"; });

  // -- same person? ---------------------------------------------------------------------------
  $("verify-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = $("verify-result");
    out.textContent = "comparing…";
    out.className = "";
    try {
      const r = await facelab.api("POST", "/api/verify", new FormData(event.currentTarget));
      out.textContent = r.same
        ? `Same person — distance ${r.distance.toFixed(3)} ≤ threshold ${r.threshold.toFixed(2)}`
        : `Different people — distance ${r.distance.toFixed(3)} > threshold ${r.threshold.toFixed(2)}`;
      out.className = r.same ? "ok" : "warn";
    } catch (error) {
      out.textContent = error.message;
      out.className = "error";
    }
  });
})();
