// Helpers shared by every page: JSON API calls with readable errors, toasts, page data, boxes.
"use strict";

window.facelab = (() => {
  /** Call the JSON API; throws an Error whose message is the server's `detail`. */
  async function api(method, url, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = { detail: text }; }
    }
    if (!response.ok) {
      const error = new Error((data && data.detail) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.data = data;
      throw error;
    }
    return data;
  }

  let toastTimer = null;
  /** A short message at the bottom of the page; kind is "info", "ok" or "error". */
  function toast(message, kind = "info") {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.className = `show ${kind}`;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.className = ""; }, kind === "error" ? 8000 : 3500);
  }

  /** The JSON the server put in <script type="application/json" id="page-data">. */
  function pageData() {
    const block = document.getElementById("page-data");
    return block ? JSON.parse(block.textContent) : {};
  }

  /** Create an element: el("li", {class: "x"}, "text", child). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /**
   * Position a box (x1, y1, x2, y2 in the photo's pixels) over an element showing the photo.
   * `scale` is displayed pixels per photo pixel.
   */
  function placeBox(node, box, scale) {
    const [x1, y1, x2, y2] = box;
    node.style.left = `${x1 * scale}px`;
    node.style.top = `${y1 * scale}px`;
    node.style.width = `${Math.max(1, (x2 - x1) * scale)}px`;
    node.style.height = `${Math.max(1, (y2 - y1) * scale)}px`;
  }

  function pct(value) {
    return value === null || value === undefined || Number.isNaN(value) ? "–" : `${(value * 100).toFixed(1)}%`;
  }

  const FLASH_KEY = "facelab-flash";
  /** A toast for the next page this tab opens (a change that navigates away says what it did). */
  function flash(message, kind = "info") {
    sessionStorage.setItem(FLASH_KEY, JSON.stringify({ message, kind }));
  }

  const pending = sessionStorage.getItem(FLASH_KEY);
  if (pending) {
    sessionStorage.removeItem(FLASH_KEY);
    try {
      const { message, kind } = JSON.parse(pending);
      toast(message, kind);
    } catch (_) { /* a value from an older version of the page */ }
  }

  return { api, toast, pageData, el, placeBox, pct, flash };
})();
