// A person's page: drag-and-drop uploads in batches (the server caps files and bytes per request),
// with progress, then the results, kept across the reload that shows the new photos.
"use strict";

(() => {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const progress = document.getElementById("upload-progress");
  const results = document.getElementById("upload-results");
  const person = document.getElementById("person-name").dataset.person;
  const maxFiles = Number(zone.dataset.maxFiles);
  const maxFileBytes = Number(zone.dataset.maxFileBytes);
  // Leave room for the multipart headers of each part.
  const maxBatchBytes = Number(zone.dataset.maxRequestBytes) - maxFiles * 4096;
  const storageKey = `facelab-upload-${person}`;

  function showResults(list) {
    results.replaceChildren();
    for (const r of list) {
      let text = r.filename;
      let kind = "ok";
      if (r.status === "rejected") { kind = "error"; text += ` — not added: ${r.reason}`; }
      else if (r.status === "duplicate") { kind = "muted"; text += " — already there"; }
      else if (r.photo_status === "no_face") { kind = "warn"; text += " — added, but no face found"; }
      else if (r.faces !== null && r.faces !== undefined) { text += ` — added, ${r.faces} face${r.faces === 1 ? "" : "s"}`; }
      else { text += " — added"; }
      results.append(facelab.el("li", { class: kind }, text));
    }
  }

  function batches(files) {
    const out = [];
    let current = [];
    let bytes = 0;
    for (const file of files) {
      if (current.length && (current.length >= maxFiles || bytes + file.size > maxBatchBytes)) {
        out.push(current);
        current = [];
        bytes = 0;
      }
      current.push(file);
      bytes += file.size;
    }
    if (current.length) out.push(current);
    return out;
  }

  function send(batch, onProgress) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      for (const file of batch) form.append("files", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/api/people/${encodeURIComponent(person)}/photos`);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.onload = () => {
        const body = xhr.response;
        // Every file refused comes back as an error status with the per-file report.
        if ((xhr.status >= 200 && xhr.status < 300) || (body && body.results)) resolve(body);
        else reject(new Error((body && body.detail) || `upload failed (${xhr.status})`));
      };
      xhr.onerror = () => reject(new Error("upload failed: the server could not be reached"));
      xhr.send(form);
    });
  }

  async function upload(fileList) {
    const all = Array.from(fileList);
    if (!all.length) return;
    const list = [];
    const files = [];
    for (const file of all) {
      if (file.size > maxFileBytes) list.push({ filename: file.name, status: "rejected", reason: "file too big" });
      else if (file.size === 0) list.push({ filename: file.name, status: "rejected", reason: "empty file" });
      else files.push(file);
    }
    const parts = batches(files);
    const bar = progress.querySelector(".bar");
    const label = progress.querySelector(".label");
    progress.hidden = false;
    zone.classList.add("busy");
    let sent = 0;
    try {
      for (const [i, batch] of parts.entries()) {
        const report = await send(batch, (fraction) => {
          const done = (sent + fraction * batch.length) / files.length;
          bar.style.width = `${Math.round(done * 100)}%`;
          label.textContent = fraction < 1
            ? `uploading ${Math.round(done * 100)}%`
            : `finding faces (batch ${i + 1} of ${parts.length})…`;
        });
        sent += batch.length;
        list.push(...report.results);
      }
      sessionStorage.setItem(storageKey, JSON.stringify(list));
      window.location.reload();
    } catch (error) {
      showResults(list);
      facelab.toast(error.message, "error");
      progress.hidden = true;
      zone.classList.remove("busy");
    }
  }

  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    upload(e.dataTransfer.files);
  });
  input.addEventListener("change", () => { upload(input.files); input.value = ""; });

  const stored = sessionStorage.getItem(storageKey);
  if (stored) {
    sessionStorage.removeItem(storageKey);
    const list = JSON.parse(stored);
    showResults(list);
    const added = list.filter((r) => r.status === "added").length;
    facelab.toast(`${added} of ${list.length} photo(s) added`, added ? "ok" : "error");
  }
})();
