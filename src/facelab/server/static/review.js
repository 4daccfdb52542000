// Review page: accept / reject / move each face with a click or a key; the focus then moves on.
"use strict";

(() => {
  const cards = () => Array.from(document.querySelectorAll("figure.crop"));

  function focusCard(card) {
    if (!card) return;
    card.focus();
    card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function next(card) {
    const all = cards();
    const i = all.indexOf(card);
    return all[i + 1] || all[i - 1] || null;
  }

  function update(card, crop, moved) {
    card.dataset.status = crop.status;
    card.classList.remove("status-pending", "status-accepted", "status-rejected", "flagged");
    card.classList.add(`status-${crop.status}`);
    const badge = card.querySelector(".badge.status");
    badge.textContent = moved ? `moved to ${crop.person}` : crop.status;
    if (moved) {
      card.dataset.person = crop.person;
      card.classList.add("moved");
    }
  }

  async function act(card, action, target) {
    const id = card.dataset.id;
    try {
      const crop = action === "move"
        ? await facelab.api("POST", `/api/crops/${id}/move`, { person: target })
        : await facelab.api("POST", `/api/crops/${id}/${action}`);
      update(card, crop, action === "move");
      focusCard(next(card));
    } catch (error) {
      facelab.toast(error.message, "error");
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const card = button.closest("figure.crop");
    act(card, button.dataset.action);
  });

  document.addEventListener("change", (event) => {
    const select = event.target.closest("select[data-action=move]");
    if (!select || !select.value) return;
    act(select.closest("figure.crop"), "move", select.value);
    select.value = "";
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const inSelect = event.target.tagName === "SELECT";
    const card = document.activeElement && document.activeElement.closest("figure.crop");
    const key = event.key.toLowerCase();
    if (inSelect) {
      if (key === "escape") card && card.focus();
      return;
    }
    if (!card) {
      if (["arrowright", "j", "arrowleft", "k", "a", "r", "x"].includes(key)) {
        focusCard(cards()[0]);
        event.preventDefault();
      }
      return;
    }
    if (key === "arrowright" || key === "j") {
      const all = cards();
      focusCard(all[all.indexOf(card) + 1]);
    } else if (key === "arrowleft" || key === "k") {
      const all = cards();
      focusCard(all[all.indexOf(card) - 1]);
    } else if (key === "a") {
      act(card, "accept");
    } else if (key === "r" || key === "x" || key === "delete") {
      act(card, "reject");
    } else if (key === "m") {
      card.querySelector("select[data-action=move]").focus();
    } else if (key === "p" && card.dataset.photo) {
      window.location.href = `/photos/${card.dataset.photo}`;
    } else {
      return;
    }
    event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    const card = event.target.closest("figure.crop");
    if (card && !event.target.closest("button, select, a")) card.focus();
  });

  const filter = document.getElementById("person-filter");
  if (filter) {
    filter.addEventListener("change", () => {
      const value = filter.value;
      window.location.href = value ? `/review?person=${encodeURIComponent(value)}` : "/review";
    });
  }
})();
