// Review page: accept / reject / move each face with a click or a key; the focus then moves on.
// Accepting a bystander (someone else in the person's photo) asks first; "accept the rest" accepts
// the pending faces shown, by their ids.
"use strict";

(() => {
  const cards = () => Array.from(document.querySelectorAll("figure.crop"));
  const dialog = document.getElementById("bystander-dialog");

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
    card.dataset.role = crop.role || "";
    card.classList.remove("status-pending", "status-accepted", "status-rejected", "flagged");
    card.classList.add(`status-${crop.status}`);
    const badge = card.querySelector(".badge.status");
    badge.textContent = moved ? `moved to ${crop.person}` : crop.status;
    // The rule of facelab.items.load_items: accepted trains, rejected never, pending as resolved.
    const trains = crop.status === "accepted" || (crop.status === "pending" && crop.role === "person");
    const mark = card.querySelector(".trains");
    mark.dataset.trains = trains ? "yes" : "no";
    mark.textContent = trains ? "trains" : "not used";
    const why = card.querySelector(".why");
    if (why && crop.status !== "pending") why.remove();
    if (moved) {
      card.dataset.person = crop.person;
      card.classList.add("moved");
      const who = card.querySelector(".who");
      who.textContent = crop.person;
      who.href = `/people/${encodeURIComponent(crop.person)}`;
    }
    refreshAcceptRest();
  }

  /** Ask before accepting a bystander as the person; resolves to "all", "skip" or "cancel". */
  function askBystanders(count, total, person) {
    document.getElementById("bystander-text").textContent = total === 1
      ? `Identity resolution took this face for someone else in ${person}'s photo (a bystander). Accept it as ${person}? It will then train as ${person}.`
      : `${count} of these ${total} faces are bystanders: identity resolution took them for someone else in the photo. Accept them as the person shown on each too?`;
    document.getElementById("bystander-all").textContent = total === 1 ? `Accept as ${person}` : "Accept all, bystanders too";
    document.getElementById("bystander-skip").hidden = total === 1 || count === total;
    return new Promise((resolve) => {
      dialog.returnValue = "cancel";
      dialog.addEventListener("close", () => resolve(dialog.returnValue || "cancel"), { once: true });
      dialog.showModal();
    });
  }

  async function act(card, action, target) {
    const id = card.dataset.id;
    try {
      if (action === "accept" && card.dataset.role === "bystander") {
        if ((await askBystanders(1, 1, card.dataset.person)) !== "all") { card.focus(); return; }
      }
      const crop = action === "move"
        ? await facelab.api("POST", `/api/crops/${id}/move`, { person: target })
        : await facelab.api("POST", `/api/crops/${id}/${action}`);
      update(card, crop, action === "move");
      focusCard(next(card));
    } catch (error) {
      facelab.toast(error.message, "error");
    }
  }

  // -- accept the rest of this page ---------------------------------------------------------------
  const acceptRest = document.getElementById("accept-rest");
  const pendingCards = () => cards().filter((c) => c.dataset.status === "pending");

  function refreshAcceptRest() {
    if (!acceptRest) return;
    const n = pendingCards().length;
    acceptRest.textContent = `Accept the ${n} pending face(s) on this page`;
    acceptRest.disabled = n === 0;
  }

  async function acceptTheRest() {
    let shown = pendingCards();
    if (!shown.length) return;
    const bystanders = shown.filter((c) => c.dataset.role === "bystander");
    let confirm = false;
    if (bystanders.length) {
      const answer = await askBystanders(bystanders.length, shown.length, "");
      if (answer === "cancel") return;
      if (answer === "skip") shown = shown.filter((c) => c.dataset.role !== "bystander");
      confirm = answer === "all";
      if (!shown.length) return;
    }
    acceptRest.disabled = true;
    try {
      const result = await facelab.api("POST", "/api/crops/accept", {
        ids: shown.map((c) => Number(c.dataset.id)), confirm_bystanders: confirm,
      });
      const byId = new Map(result.crops.map((c) => [String(c.id), c]));
      for (const card of shown) if (byId.has(card.dataset.id)) update(card, byId.get(card.dataset.id), false);
      facelab.toast(result.message, "ok");
    } catch (error) {
      facelab.toast(error.message, "error");
    }
    refreshAcceptRest();
  }
  if (acceptRest) acceptRest.addEventListener("click", acceptTheRest);

  // -- clicks and keys ----------------------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const button = event.target.closest("figure.crop button[data-action]");
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
    if (event.ctrlKey || event.metaKey || event.altKey || dialog.open) return;
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
      const { show } = facelab.pageData();
      const params = new URLSearchParams({ show: show || "all" });
      if (filter.value) params.set("person", filter.value);
      window.location.href = `/review?${params}`;
    });
  }
})();
