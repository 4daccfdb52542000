// Photo page: show the faces found, and draw a box round a face the detector missed.
"use strict";

(() => {
  const photo = facelab.pageData();
  const image = document.getElementById("photo");
  const stage = document.getElementById("stage");
  if (!image || !stage) return;
  const newBox = document.getElementById("new-box");
  const addButton = document.getElementById("add-face");
  const clearButton = document.getElementById("clear-box");
  const info = document.getElementById("box-info");
  let drawn = null; // [x1, y1, x2, y2] in photo pixels
  let start = null;

  const scale = () => image.clientWidth / photo.width;

  function layout() {
    for (const node of stage.querySelectorAll(".face-box[data-box]")) {
      facelab.placeBox(node, node.dataset.box.split(",").map(Number), scale());
    }
    if (drawn) facelab.placeBox(newBox, drawn, scale());
  }

  function point(event) {
    const rect = image.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
    const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
    return [x / scale(), y / scale()];
  }

  function setBox(a, b) {
    drawn = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    newBox.hidden = false;
    facelab.placeBox(newBox, drawn, scale());
    const w = Math.round(drawn[2] - drawn[0]);
    const h = Math.round(drawn[3] - drawn[1]);
    const ok = Math.min(w, h) >= 8;
    addButton.disabled = !ok;
    clearButton.disabled = false;
    info.textContent = ok ? `${w}×${h} px` : "too small — drag a larger box";
  }

  function clear() {
    drawn = null;
    newBox.hidden = true;
    addButton.disabled = true;
    clearButton.disabled = true;
    info.textContent = "";
  }

  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    start = point(event);
    stage.setPointerCapture(event.pointerId);
    setBox(start, start);
    event.preventDefault();
  });
  stage.addEventListener("pointermove", (event) => { if (start) setBox(start, point(event)); });
  stage.addEventListener("pointerup", (event) => {
    if (!start) return;
    setBox(start, point(event));
    start = null;
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") clear(); });
  clearButton.addEventListener("click", clear);

  addButton.addEventListener("click", async () => {
    if (!drawn) return;
    const [x1, y1, x2, y2] = drawn.map((v) => Math.round(v * 10) / 10);
    addButton.disabled = true;
    try {
      await facelab.api("POST", `/api/photos/${photo.id}/faces`, { x1, y1, x2, y2 });
      facelab.toast("Face added", "ok");
      window.location.reload();
    } catch (error) {
      addButton.disabled = false;
      facelab.toast(error.message, "error");
    }
  });

  const del = document.getElementById("delete-photo");
  if (del) {
    del.addEventListener("click", async () => {
      if (!window.confirm("Delete this photo, its faces and crops?")) return;
      try {
        await facelab.api("DELETE", `/api/photos/${photo.id}`);
        window.location.href = `/people/${encodeURIComponent(photo.person)}`;
      } catch (error) {
        facelab.toast(error.message, "error");
      }
    });
  }

  if (image.complete) layout();
  image.addEventListener("load", layout);
  window.addEventListener("resize", layout);
})();
