// People page: create a person, then go to their page to upload photos.
"use strict";

document.getElementById("new-person").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const name = form.elements.name.value.trim();
  try {
    const person = await facelab.api("POST", "/api/people", { name });
    window.location.href = `/people/${encodeURIComponent(person.name)}`;
  } catch (error) {
    facelab.toast(error.message, "error");
  }
});
