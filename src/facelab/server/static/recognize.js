// Recognize page: a photo (boxes and names drawn over it), the webcam (frames posted to the
// server a few times a second, names over faces), and "same person?" for two photos. Every face
// has "This is…": it enrolls that face as a person (known or new) without retraining.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const known = new Set(facelab.pageData().people || []);

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

  /** The names, one per face; with "This is…" when the model can learn a face (`onTeach(i)`). */
  function listNames(list, result, onTeach) {
    list.replaceChildren(...result.faces.map((f, i) => {
      const item = facelab.el("li", { class: f.name === "unknown" ? "unknown" : "known", "data-face": i },
        facelab.el("span", {}, label(f)));
      if (result.image && result.can_enroll && onTeach) {
        const button = facelab.el("button", { type: "button", class: "this-is", title: "Teach the model who this is" }, "This is…");
        button.addEventListener("click", () => onTeach(i));
        item.append(button);
      }
      return item;
    }));
  }

  function summaryWords(result) {
    if (result.threshold === null || result.threshold === undefined) return "";
    const whose = result.threshold_chosen ? "chosen on the run's page" : "calibrated";
    return ` · unknown below ${(result.threshold * 100).toFixed(0)}% (${whose})`;
  }

  // -- "This is …" ------------------------------------------------------------------------------
  const dialog = $("enroll-dialog");
  const form = $("enroll-form");
  const select = $("enroll-person");
  const newLabel = $("enroll-new-label");
  const newInput = $("enroll-new");
  const formError = form.querySelector("[data-error]");
  let teaching = null; // {result, face, done(message)} while the dialog is open

  function openTeach(result, face, done) {
    const answer = result.faces[face];
    for (const [name] of answer.candidates) if (name !== "unknown" && name !== "others") known.add(name);
    const names = Array.from(known).sort((a, b) => a.localeCompare(b));
    select.replaceChildren(
      ...names.map((n) => facelab.el("option", { value: n, selected: n === answer.name }, n)),
      facelab.el("option", { value: "", selected: !names.includes(answer.name) }, "a new person…"));
    $("enroll-face").textContent = `Face ${face + 1}, answered ${answer.name}.`;
    formError.hidden = true;
    newInput.value = "";
    newLabel.hidden = select.value !== "";
    teaching = { result, face, done };
    dialog.showModal();
    (select.value === "" ? newInput : select).focus();
  }

  select.addEventListener("change", () => {
    newLabel.hidden = select.value !== "";
    if (!newLabel.hidden) newInput.focus();
  });
  dialog.addEventListener("close", () => {
    if (teaching && teaching.done) teaching.done(null);
    teaching = null;
  });
  dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!teaching) return;
    const isNew = select.value === "";
    const person = isNew ? newInput.value.trim() : select.value;
    if (!person) {
      formError.textContent = "Type the new person's name.";
      formError.hidden = false;
      return;
    }
    $("enroll-save").disabled = true;
    try {
      const answer = await facelab.api("POST", "/api/recognize/enroll",
        { image: teaching.result.image, face: teaching.face, person, new: isNew });
      known.add(answer.person);
      const done = teaching.done;
      teaching = null;
      dialog.close();
      done(answer);
    } catch (error) {
      formError.textContent = error.message;
      formError.hidden = false;
    } finally {
      $("enroll-save").disabled = false;
    }
  });

  /** Say what enrolling did, with the way to retrain (it recalibrates unknown for the new faces). */
  function showEnrolled(target, answer) {
    target.replaceChildren(answer.message, " ",
      facelab.el("a", { href: answer.retrain, id: "retrain-link" }, "Retrain"),
      " to recalibrate unknown for your people now.");
    target.className = answer.named === answer.person ? "ok" : "warn";
    target.hidden = false;
    facelab.toast(`${answer.person}: saved`, "ok");
  }

  // -- a photo --------------------------------------------------------------------------------
  const drop = $("recognize-drop");
  const fileInput = $("recognize-file");
  const stage = $("recognize-stage");
  const image = $("recognize-image");
  let lastResult = null;
  let lastFile = null;

  function teachPhoto(face) {
    openTeach(lastResult, face, (answer) => {
      if (!answer) return;
      showEnrolled($("enroll-result"), answer);
      recognizePhoto(lastFile, true); // the same photo again: the new answer, from the server
    });
  }

  async function recognizePhoto(file, keepMessage = false) {
    if (!file) return;
    lastFile = file;
    if (!keepMessage) $("enroll-result").hidden = true;
    stage.hidden = false;
    image.src = URL.createObjectURL(file);
    for (const old of stage.querySelectorAll(".face-box")) old.remove();
    $("recognize-names").replaceChildren();
    $("recognize-summary").textContent = "recognizing…";
    const upload = new FormData();
    upload.append("file", file, file.name);
    const started = performance.now();
    try {
      lastResult = await facelab.api("POST", "/api/recognize", upload);
      const ms = Math.round(performance.now() - started);
      const n = lastResult.faces.length;
      $("recognize-summary").textContent = n
        ? `${n} face${n === 1 ? "" : "s"} · ${ms} ms · model ${lastResult.model}${summaryWords(lastResult)}`
        : `no face found · ${ms} ms`;
      listNames($("recognize-names"), lastResult, teachPhoto);
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
  let paused = false; // while "This is…" is open for a face of the last frame
  let lastFrame = null;
  let inFlight = false;
  let timer = null;

  function teachFrame(face) {
    paused = true;
    clearTimeout(timer);
    openTeach(lastFrame, face, (answer) => {
      if (answer) showEnrolled($("camera-enroll-result"), answer);
      paused = false;
      if (running && !inFlight) sendFrame();
    });
  }

  async function sendFrame() {
    if (!running || paused) return;
    const width = video.videoWidth;
    const height = video.videoHeight;
    if (!width || !height) { timer = setTimeout(sendFrame, 200); return; }
    // Frames are shrunk to 640 px: faces across a room are still found, and uploads stay small.
    const scale = Math.min(1, 640 / Math.max(width, height));
    frame.width = Math.round(width * scale);
    frame.height = Math.round(height * scale);
    frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.8));
    const frameForm = new FormData();
    frameForm.append("file", blob, "frame.jpg");
    const started = performance.now();
    inFlight = true;
    try {
      const result = await facelab.api("POST", "/api/recognize", frameForm);
      if (!running || paused) return;
      lastFrame = result;
      drawFaces(cameraStage, video, result);
      listNames($("camera-names"), result, teachFrame);
      const n = result.faces.length;
      status.textContent = `${n} face${n === 1 ? "" : "s"} · ${Math.round(performance.now() - started)} ms a frame`;
    } catch (error) {
      status.textContent = error.message;
      if (error.status === 404 || error.status === 401) { stop(); return; }
    } finally {
      inFlight = false;
    }
    // One frame in flight at a time: the server sets the pace, never a queue of stale frames.
    timer = setTimeout(sendFrame, 150);
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
        ? `Same person — the faces differ by ${r.distance.toFixed(3)}, within the ${r.threshold.toFixed(2)} that one person's faces differ by`
        : `Different people — the faces differ by ${r.distance.toFixed(3)}, more than the ${r.threshold.toFixed(2)} one person's faces differ by`;
      out.className = r.same ? "ok" : "warn";
    } catch (error) {
      out.textContent = error.message;
      out.className = "error";
    }
  });
})();
