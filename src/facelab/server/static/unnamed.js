// Unnamed faces: group the album's unnamed faces again, and name a group (an existing person
// from the list, or a new name) — then link to the album search for that name.
"use strict";

(() => {
  const regroup = document.getElementById("regroup");
  if (regroup) {
    regroup.addEventListener("click", async () => {
      regroup.disabled = true;
      regroup.textContent = "Grouping…";
      try {
        const answer = await facelab.api("POST", "/api/albums/clusters");
        facelab.flash(answer.message, "ok");
        window.location.reload();
      } catch (error) {
        facelab.toast(error.message, "error");
        regroup.disabled = false;
        regroup.textContent = "Group again";
      }
    });
  }

  for (const form of document.querySelectorAll("form.name-group")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = form.elements.name;
      const name = input.value.trim();
      if (!name) {
        facelab.toast("Type a name, or pick a person from the list", "error");
        return;
      }
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const answer = await facelab.api("POST", `/api/albums/clusters/${form.dataset.cluster}/name`, { name });
        const card = form.closest(".cluster");
        const shown = card.querySelector(".named-as");
        shown.querySelector("b").textContent = answer.name;
        const link = shown.querySelector("a.find-link");
        link.href = answer.find_url;
        link.textContent = `see the ${answer.album_photos} photo${answer.album_photos === 1 ? "" : "s"} in the album`;
        shown.hidden = false;
        card.classList.add("named");
        form.remove();
        const list = document.getElementById("people-list");
        if (list && !Array.from(list.options).some((o) => o.value === answer.name)) {
          list.append(facelab.el("option", { value: answer.name }));
        }
        facelab.toast(answer.message, "ok");
      } catch (error) {
        facelab.toast(error.message, "error");
        button.disabled = false;
      }
    });
  }
})();
