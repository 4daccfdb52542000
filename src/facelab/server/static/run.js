// Run results page: make this run the model that recognizes.
"use strict";

(() => {
  const button = document.getElementById("use-run");
  if (!button) return;
  const run = document.getElementById("run-name").dataset.run;
  button.addEventListener("click", async () => {
    try {
      await facelab.api("PUT", "/api/current-model", { run });
      window.location.reload();
    } catch (error) {
      facelab.toast(error.message, "error");
    }
  });
})();
