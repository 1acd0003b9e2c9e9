// The console's progressive enhancements. Every page works without this file; with it, a file can be dropped
// on the submit form, and a job page follows its job live. No inline script anywhere: the CSP forbids it.
"use strict";

function enhanceDropZone() {
  const zone = document.getElementById("drop");
  const input = document.getElementById("file");
  const url = document.getElementById("url");
  if (!zone || !input) return;
  const preview = document.getElementById("drop-preview");
  const text = document.getElementById("drop-text");

  function show(file) {
    if (!file) return;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    text.textContent = file.name;
    if (url) url.value = "";
  }
  input.addEventListener("change", () => show(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      show(input.files[0]);
    }
  });
  if (url) url.addEventListener("input", () => {
    if (url.value && input.value) {
      input.value = "";
      preview.hidden = true;
      text.textContent = "Drop an image here or choose a file";
    }
  });
  const form = document.getElementById("submit-form");
  const button = document.getElementById("submit-button");
  form.addEventListener("submit", () => {
    button.disabled = true;
    button.textContent = "Submitting…";
  });
}

function followJob() {
  const job = document.getElementById("job");
  if (!job || job.dataset.final === "true") return;
  let delayMs = 500;
  const live = document.getElementById("live");

  async function poll() {
    try {
      const response = await fetch(job.dataset.statusUrl, { headers: { accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const state = await response.json();
        if (state.final || state.status !== job.dataset.status) {
          // A new state: the server renders it (images, history) rather than this script rebuilding the page.
          window.location.reload();
          return;
        }
        document.getElementById("attempts").textContent = state.attempts;
        document.getElementById("executions").textContent = state.executions;
      }
    } catch (error) {
      if (live) live.textContent = "connection lost, retrying";
    }
    delayMs = Math.min(delayMs * 1.5, 5000);
    window.setTimeout(poll, delayMs);
  }
  window.setTimeout(poll, delayMs);
}

function refreshPeriodically() {
  const page = document.querySelector("[data-refresh-s]");
  if (!page) return;
  const seconds = Number(page.dataset.refreshS);
  if (seconds > 0) window.setTimeout(() => window.location.reload(), seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  enhanceDropZone();
  followJob();
  refreshPeriodically();
});
