// Train page: start a job, then poll its status once a second until it ends.
"use strict";

(() => {
  const form = document.getElementById("train-form");
  const panel = document.getElementById("job");
  const $ = (id) => document.getElementById(id);
  let timer = null;

  function showMode() {
    const mode = form.elements.mode.value;
    for (const sub of form.querySelectorAll(".sub")) sub.hidden = sub.dataset.mode !== mode;
  }
  form.addEventListener("change", showMode);
  showMode();

  function body() {
    const f = form.elements;
    const mode = f.mode.value;
    const data = { mode };
    if (mode === "auto") data.budget_minutes = Number(f.budget_minutes.value);
    if (mode === "embedding") data.head = f.head.value;
    if (mode === "transfer") {
      data.backbone = f.backbone.value;
      data.strategy = f.strategy.value;
      data.augment = f.augment.value;
      if (f.epochs.value) data.epochs = Number(f.epochs.value);
    }
    if (mode !== "auto" && f.include_others.checked) data.include_others = true;
    return data;
  }

  function drawCurve(history) {
    const canvas = $("job-curve");
    canvas.hidden = history.length < 2;
    $("job-legend").hidden = canvas.hidden;
    if (canvas.hidden) return;
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    ctx.clearRect(0, 0, width, height);
    ctx.strokeStyle = "#ddd";
    ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
    const last = history[history.length - 1].epoch;
    const first = history[0].epoch;
    const x = (e) => 4 + ((e - first) / Math.max(1, last - first)) * (width - 8);
    const y = (v) => height - 4 - v * (height - 8);
    for (const [key, color] of [["train_accuracy", "#1f77b4"], ["val_accuracy", "#d62728"]]) {
      ctx.beginPath();
      ctx.strokeStyle = color;
      history.forEach((row, i) => {
        if (row[key] === null) return;
        if (i === 0) ctx.moveTo(x(row.epoch), y(row[key]));
        else ctx.lineTo(x(row.epoch), y(row[key]));
      });
      ctx.stroke();
    }
  }

  function render(job) {
    panel.hidden = false;
    $("job-state").textContent = job.state + (job.cancel_requested && job.state === "running" ? " (cancelling)" : "");
    panel.dataset.state = job.state;
    $("job-phase").textContent = job.phase;
    const fraction = job.state === "done" ? 1 : job.total ? Math.min(1, job.step / job.total) : 0;
    $("job-bar").style.width = `${Math.round(fraction * 100)}%`;
    $("job-step").textContent = job.state === "done" ? "done" : job.total ? `${job.step} / ${job.total}` : "";
    $("job-epoch").textContent = job.epoch ?? "–";
    $("job-epoch").parentElement.hidden = job.epoch === null;
    $("job-train-acc").textContent = facelab.pct(job.train_accuracy);
    $("job-val-acc").textContent = facelab.pct(job.val_accuracy);
    $("job-elapsed").textContent = `${Math.round(job.elapsed)} s`;
    drawCurve(job.history);
    const table = $("job-candidates");
    table.hidden = !job.candidates.length;
    $("job-candidates-words").hidden = table.hidden;
    table.tBodies[0].replaceChildren(
      ...job.candidates.map((c) =>
        facelab.el(
          "tr",
          {},
          facelab.el("td", {}, c.name),
          facelab.el("td", {}, facelab.pct(c.val_accuracy)),
          facelab.el("td", {}, facelab.pct(c.val_fnir)),
        ),
      ),
    );
    $("job-log").textContent = job.log.join("\n");
    const active = job.state === "queued" || job.state === "running";
    $("cancel-job").hidden = !active;
    $("start-training").disabled = active;
    const result = $("job-result");
    result.hidden = !(job.state === "done" && job.run);
    if (!result.hidden) {
      const acc = job.result && job.result.metrics ? job.result.metrics.accuracy : null;
      result.replaceChildren(
        "Done: ",
        facelab.el("a", { href: `/runs/${encodeURIComponent(job.run)}`, id: "job-run-link" }, job.run),
        ` — test accuracy ${facelab.pct(acc)}. It is now the model that recognizes: `,
        facelab.el("a", { href: "/recognize" }, "try it"),
        ".",
      );
    }
    const error = $("job-error");
    error.hidden = job.state !== "failed";
    error.textContent = job.error || "";
    if (!active && timer !== null) {
      clearInterval(timer);
      timer = null;
      // Finished while watched: reload once so the table of trained models shows the new run.
      if (job.state === "done") window.location.reload();
    }
  }

  async function poll(id) {
    try {
      render(await facelab.api("GET", `/api/jobs/${id}`));
    } catch (error) {
      clearInterval(timer);
      timer = null;
      facelab.toast(error.message, "error");
    }
  }

  function follow(job) {
    clearInterval(timer);
    timer = null;
    render(job);
    if (job.state === "queued" || job.state === "running") timer = setInterval(() => poll(job.id), 1000);
    $("cancel-job").onclick = async () => {
      try { render(await facelab.api("POST", `/api/jobs/${job.id}/cancel`)); } catch (e) { facelab.toast(e.message, "error"); }
    };
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      follow(await facelab.api("POST", "/api/jobs", body()));
    } catch (error) {
      facelab.toast(error.message, "error");
    }
  });

  const data = facelab.pageData();
  if (data.job) follow(data.job);
})();
