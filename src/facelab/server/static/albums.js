// Albums page: a person is either wanted or excluded, never both — ticking one unticks the other.
"use strict";

(() => {
  const form = document.getElementById("album-search");
  if (!form) return;
  form.addEventListener("change", (event) => {
    const box = event.target;
    if (box.type !== "checkbox" || !box.checked) return;
    const other = box.name === "name" ? "exclude" : "name";
    for (const twin of form.querySelectorAll(`input[name="${other}"]`)) {
      if (twin.value === box.value) twin.checked = false;
    }
  });
  form.addEventListener("submit", (event) => {
    if (!form.querySelector('input[name="name"]:checked')) {
      event.preventDefault();
      facelab.toast("Choose at least one person the photos must show", "error");
    }
  });
})();
