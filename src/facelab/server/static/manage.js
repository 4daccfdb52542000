// A person's page: rename, merge into someone else, or delete — each in a dialog that says what
// it changes (delete: the counts, fetched fresh) before anything happens.
"use strict";

(() => {
  const data = facelab.pageData();
  const person = data.person;
  if (!person) return;
  const url = `/api/people/${encodeURIComponent(person)}`;

  /** Wire a dialog: an opener button, Cancel, and a submit that calls `run` and follows its answer. */
  function dialog(name, run, onOpen) {
    const box = document.getElementById(`${name}-dialog`);
    const opener = document.getElementById(`${name}-open`);
    const form = box.querySelector("form");
    const error = form.querySelector("[data-error]");
    opener.addEventListener("click", async () => {
      error.hidden = true;
      if (onOpen) await onOpen(form);
      box.showModal();
    });
    form.querySelector("[data-close]").addEventListener("click", () => box.close());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        const change = await run(form);
        facelab.flash(change.message, "ok");
        window.location.href = change.into
          ? `/people/${encodeURIComponent(change.into)}`
          : "/people";
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
        submit.disabled = false;
      }
    });
  }

  dialog("rename", (form) => facelab.api("POST", `${url}/rename`, { name: form.elements.name.value.trim() }), (form) => {
    form.elements.name.select();
  });
  dialog("merge", (form) => facelab.api("POST", `${url}/merge`, { into: form.elements.into.value }));
  dialog(
    "delete",
    () => facelab.api("DELETE", url),
    async (form) => {
      // The counts on the page may be stale (another tab, a CLI build): ask again.
      try {
        const fresh = await facelab.api("GET", url);
        for (const [key, value] of Object.entries(fresh.delete_preview)) {
          const item = form.querySelector(`li[data-count="${key}"]`);
          if (!item) continue;
          item.querySelector("b").textContent = value;
          if (!["photos", "face_crops", "enrolled"].includes(key)) item.hidden = value === 0;
        }
      } catch (e) {
        facelab.toast(e.message, "error");
      }
    },
  );
})();
