// Run results page: make this run the model that recognizes, and choose how strict "unknown" is
// with a slider whose figures come from the run's calibration evidence (GET /api/runs/{run}/threshold).
"use strict";

(() => {
  const run = document.getElementById("run-name").dataset.run;
  const button = document.getElementById("use-run");
  if (button) {
    button.addEventListener("click", async () => {
      try {
        await facelab.api("PUT", "/api/current-model", { run });
        window.location.reload();
      } catch (error) {
        facelab.toast(error.message, "error");
      }
    });
  }

  const card = document.getElementById("threshold-card");
  if (!card) return;
  const $ = (id) => document.getElementById(id);
  const slider = $("threshold-slider");
  let curve = null;

  /** "about 3 in 100", "fewer than 1 in 100", "none" — the words facelab's CLI uses. */
  function per100(rate) {
    if (rate === null || rate === undefined) return null;
    const value = rate * 100;
    if (value === 0) return "none";
    if (value < 0.5) return "fewer than 1 in 100";
    return `about ${value.toFixed(0)} in 100`;
  }

  function nearest(value) {
    let best = 0;
    curve.thresholds.forEach((t, i) => { if (Math.abs(t - value) < Math.abs(curve.thresholds[best] - value)) best = i; });
    return best;
  }

  function show() {
    const i = Number(slider.value);
    const t = curve.thresholds[i];
    const named = curve.strangers_named[i];
    const missed = curve.people_missed[i];
    $("threshold-value").textContent = t.toFixed(3) + (i === nearest(curve.calibrated) ? " (calibrated)" : "");
    $("slider-strangers").textContent = facelab.pct(named);
    $("slider-strangers-words").textContent = `${per100(named)} strangers may be given one of your people's names`;
    $("slider-missed").textContent = facelab.pct(missed);
    $("slider-missed-words").textContent = missed === null
      ? "no validation faces to measure it on"
      : `${per100(missed)} faces of your people may be answered unknown or misnamed`;
  }

  function showSaved() {
    const used = curve.chosen ?? curve.calibrated;
    $("threshold-saved").textContent = curve.chosen === null
      ? `recognition uses the calibrated ${used.toFixed(3)}`
      : `recognition uses ${used.toFixed(3)} (your choice)${curve.current ? "" : " once this run is the current model"}`;
  }

  async function save(value) {
    try {
      const answer = await facelab.api("PUT", `/api/runs/${encodeURIComponent(run)}/threshold`, { threshold: value });
      curve.chosen = answer.chosen ? answer.threshold : null;
      if (!answer.chosen) slider.value = nearest(curve.calibrated);
      show();
      showSaved();
      facelab.toast(answer.message, "ok");
    } catch (error) {
      facelab.toast(error.message, "error");
    }
  }

  async function load() {
    try {
      curve = await facelab.api("GET", `/api/runs/${encodeURIComponent(run)}/threshold`);
    } catch (error) {
      $("threshold-status").textContent = error.message;
      return;
    }
    slider.max = String(curve.thresholds.length - 1);
    slider.value = String(nearest(curve.chosen ?? curve.calibrated));
    $("threshold-status").hidden = true;
    $("threshold-controls").hidden = false;
    $("threshold-evidence").textContent = `Strangers: ${curve.evidence.map((e) => `${e.words} (${e.n})`).join("; ")}. ` +
      `Your people: ${curve.n_validation_faces} validation faces of ${curve.n_people} people.`;
    show();
    showSaved();
  }

  slider.addEventListener("input", show);
  $("threshold-save").addEventListener("click", () => save(curve.thresholds[Number(slider.value)]));
  $("threshold-reset").addEventListener("click", () => save(null));
  load();
})();
