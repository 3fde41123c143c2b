// A small tus 1.0 client (core + creation) for the upload page. Static file: the CSP
// forbids inline code. It encrypts nothing itself: the server encrypts as bytes arrive.
"use strict";
(function () {
  const root = document.getElementById("uploader");
  if (!root || !window.vault) { return; }
  const TUS_VERSION = "1.0.0";
  const CHUNK_BYTES = 8 * 1024 * 1024;
  const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 16000, 30000];
  const data = root.dataset;
  const input = root.querySelector('input[type="file"]');
  const startButton = root.querySelector('[data-action="start"]');
  const pauseButton = root.querySelector('[data-action="pause"]');
  const resumeButton = root.querySelector('[data-action="resume"]');
  const bar = root.querySelector("progress");
  const field = (name) => root.querySelector('[data-field="' + name + '"]');
  let paused = false;
  let running = false;
  let uploadUrl = null;

  function say(text) { field("status").textContent = text; }

  function encodeMetadata(pairs) {
    return Object.entries(pairs).map(([key, value]) => {
      const bytes = new TextEncoder().encode(value);
      let binary = "";
      bytes.forEach((b) => { binary += String.fromCharCode(b); });
      return key + " " + btoa(binary);
    }).join(",");
  }

  // The stored fingerprint lets a reloaded page or a new tab continue the same upload.
  function fingerprint(file) {
    return "vault-upload:" + data.recordingId + ":" + file.name + ":" + file.size + ":" + file.lastModified;
  }

  function formatBytes(perSecond) {
    const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let value = perSecond;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return value.toFixed(unit === 0 ? 0 : 1) + " " + units[unit];
  }

  function formatDuration(seconds) {
    if (!isFinite(seconds)) { return "–"; }
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(rest).padStart(2, "0") + " " + data.msgLeft;
  }

  function tusHeaders(extra) {
    return Object.assign({ "Tus-Resumable": TUS_VERSION }, extra || {});
  }

  async function problemText(response) {
    try {
      const body = await response.json();
      return body.detail || data.msgFailed;
    } catch (error) {
      return data.msgFailed;
    }
  }

  async function create(file) {
    const response = await window.vault.apiFetch(data.creationUrl, {
      method: "POST",
      headers: tusHeaders({
        "Upload-Length": String(file.size),
        "Upload-Metadata": encodeMetadata({ recording_id: data.recordingId, filename: file.name }),
      }),
    });
    if (response.status !== 201) { throw new Error(await problemText(response)); }
    return new URL(response.headers.get("Location"), window.location.href).toString();
  }

  async function currentOffset(url) {
    const response = await window.vault.apiFetch(url, { method: "HEAD", headers: tusHeaders() });
    if (!response.ok) { return null; }
    return Number(response.headers.get("Upload-Offset"));
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  async function send(file, offset) {
    let attempt = 0;
    let measuredFrom = { time: performance.now(), offset: offset };
    let speed = 0;
    while (offset < file.size) {
      if (paused) { say(data.msgPaused); return false; }
      const end = Math.min(offset + CHUNK_BYTES, file.size);
      let response = null;
      try {
        response = await window.vault.apiFetch(uploadUrl, {
          method: "PATCH",
          headers: tusHeaders({
            "Upload-Offset": String(offset),
            "Content-Type": "application/offset+octet-stream",
          }),
          body: file.slice(offset, end),
        });
      } catch (networkError) {
        response = null;
      }
      if (response && response.status === 204) {
        attempt = 0;
        offset = Number(response.headers.get("Upload-Offset"));
        const now = performance.now();
        const elapsed = (now - measuredFrom.time) / 1000;
        if (elapsed > 0.5) {
          const recent = (offset - measuredFrom.offset) / elapsed;
          speed = speed ? 0.7 * speed + 0.3 * recent : recent;
          measuredFrom = { time: now, offset: offset };
        }
        const percent = (100 * offset) / file.size;
        bar.value = percent;
        field("percent").textContent = percent.toFixed(1) + " %";
        field("speed").textContent = speed ? formatBytes(speed) : "–";
        field("eta").textContent = speed ? formatDuration((file.size - offset) / speed) : "–";
        say(data.msgUploading);
        continue;
      }
      if (response && response.status >= 400 && response.status < 500 && response.status !== 409) {
        throw new Error(await problemText(response));
      }
      // A lost connection, a 5xx or an offset conflict: wait, then ask the server where it is.
      if (attempt >= RETRY_DELAYS_MS.length) { throw new Error(data.msgFailed); }
      say(data.msgRetrying);
      await sleep(RETRY_DELAYS_MS[attempt]);
      attempt += 1;
      const serverOffset = await currentOffset(uploadUrl).catch(() => null);
      if (serverOffset !== null) { offset = serverOffset; }
    }
    return true;
  }

  async function waitUntilAvailable() {
    say(data.msgProcessing);
    for (;;) {
      const response = await window.vault.apiFetch(data.statusUrl, { method: "GET" });
      if (response.ok) {
        const recording = await response.json();
        if (recording.status === "available") {
          say(data.msgAvailable);
          root.dataset.state = "available";
          window.location.assign(data.detailUrl);
          return;
        }
        if (recording.status === "failed") { throw new Error(data.msgFailed); }
      }
      await sleep(1000);
    }
  }

  async function run() {
    const file = input.files && input.files[0];
    if (!file || running) { return; }
    if (file.size > Number(data.maxBytes)) { say(data.msgTooLarge); return; }
    running = true;
    paused = false;
    startButton.disabled = true;
    pauseButton.disabled = false;
    resumeButton.disabled = true;
    try {
      const key = fingerprint(file);
      uploadUrl = window.localStorage.getItem(key);
      let offset = uploadUrl ? await currentOffset(uploadUrl) : null;
      if (offset === null) {
        uploadUrl = await create(file);
        window.localStorage.setItem(key, uploadUrl);
        offset = 0;
      } else {
        say(data.msgResuming);
      }
      const finished = await send(file, offset);
      if (finished) {
        window.localStorage.removeItem(key);
        pauseButton.disabled = true;
        await waitUntilAvailable();
      } else {
        resumeButton.disabled = false;
      }
    } catch (error) {
      say(error.message || data.msgFailed);
      root.dataset.state = "failed";
      startButton.disabled = false;
    } finally {
      running = false;
    }
  }

  startButton.addEventListener("click", run);
  pauseButton.addEventListener("click", () => { paused = true; pauseButton.disabled = true; });
  resumeButton.addEventListener("click", () => { resumeButton.disabled = true; run(); });
})();
