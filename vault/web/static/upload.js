// A small tus 1.0 client (core + creation) for the upload page. Static file: the CSP
// forbids inline code. It encrypts nothing itself: the server encrypts as bytes arrive.
"use strict";
(function () {
  const root = document.getElementById("uploader");
  if (!root || !window.vault) { return; }
  const TUS_VERSION = "1.0.0";
  const CHUNK_BYTES = 8 * 1024 * 1024;
  const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 16000, 30000];
  // A 423 says how long the server still holds the upload for a request it has not seen
  // end (a reconnect right after a dropped PATCH); never wait longer than this for it.
  const MAX_LOCKED_WAIT_MS = 10000;
  const data = root.dataset;
  const input = root.querySelector('input[type="file"]');
  const startButton = root.querySelector('[data-action="start"]');
  const pauseButton = root.querySelector('[data-action="pause"]');
  const resumeButton = root.querySelector('[data-action="resume"]');
  const discardButton = root.querySelector('[data-action="discard"]');
  const bar = root.querySelector("progress");
  const field = (name) => root.querySelector('[data-field="' + name + '"]');
  const language = document.documentElement.lang || undefined;
  const percentFormat = new Intl.NumberFormat(language, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  // The uploads this browser remembers, one localStorage entry each: the key names the
  // recording and the file, the value is the upload's URL.
  const STORAGE_PREFIX = "vault-upload:" + data.recordingId + ":";
  let paused = false;
  let running = false;
  let uploadUrl = null;
  let inFlight = null;
  let wake = null;
  let offer = null;

  // What ends an upload attempt. "resume": the same file continues when Resume is pressed;
  // "restart": the upload is gone, a file must be sent anew; "final": nothing more to do.
  class UploadError extends Error {
    constructor(message, next) {
      super(message);
      this.next = next;
    }
  }

  function say(text, kind) {
    const status = field("status");
    status.textContent = text;
    status.classList.toggle("upload-status--error", kind === "error");
  }

  function fill(template, values) {
    return Object.entries(values).reduce((text, [name, value]) => text.replace("{" + name + "}", value), template);
  }

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
    return STORAGE_PREFIX + file.name + ":" + file.size + ":" + file.lastModified;
  }

  // Every upload remembered for this recording, with the file it was sending.
  function remembered() {
    const found = [];
    for (let index = 0; index < window.localStorage.length; index += 1) {
      const key = window.localStorage.key(index);
      if (key && key.startsWith(STORAGE_PREFIX)) {
        const parts = key.slice(STORAGE_PREFIX.length).split(":");
        parts.pop(); // the file's modification time
        const size = Number(parts.pop());
        found.push({ key: key, url: window.localStorage.getItem(key), name: parts.join(":"), size: size });
      }
    }
    return found;
  }

  function formatSize(bytes) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let value = bytes;
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

  // Rounded down, so a nearly finished upload never shows 100 % before its last byte.
  function percentOf(offset, size) {
    return percentFormat.format(size ? Math.floor((1000 * offset) / size) / 10 : 0) + " %";
  }

  function showProgress(offset, size) {
    bar.value = size ? (100 * offset) / size : 0;
    field("percent").textContent = percentOf(offset, size);
  }

  function tusHeaders(extra) {
    return Object.assign({ "Tus-Resumable": TUS_VERSION }, extra || {});
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  // A wait that the Pause button cuts short.
  function pausableSleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => { clearTimeout(timer); resolve(); };
    }).finally(() => { wake = null; });
  }

  function lockedWait(response) {
    const seconds = Number(response.headers.get("Retry-After"));
    return Math.min(MAX_LOCKED_WAIT_MS, 1000 * (seconds > 0 ? seconds : 1));
  }

  async function problemText(response) {
    try {
      const body = await response.json();
      return body.detail || data.msgFailed;
    } catch (error) {
      return data.msgFailed;
    }
  }

  // The error a refusal of the server ends the attempt with, saying what to do next.
  async function refusal(response) {
    switch (response.status) {
      case 415: return new UploadError(data.msgNotMedia, "restart");
      case 404: return new UploadError(data.msgGone, "restart");
      case 410: return new UploadError(data.msgClosed, "final");
      default: return new UploadError(await problemText(response), "restart");
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
    if (response.status !== 201) { throw await refusal(response); }
    return new URL(response.headers.get("Location"), window.location.href).toString();
  }

  // tus HEAD: { offset, length } of an upload the server still has, or null when it is
  // gone (removed, failed, finished). A 423 is waited out; a network error throws.
  async function probe(url) {
    for (;;) {
      const response = await window.vault.apiFetch(url, { method: "HEAD", headers: tusHeaders() });
      if (response.status === 423) {
        await sleep(lockedWait(response));
        continue;
      }
      if ([404, 409, 410].includes(response.status)) { return null; }
      if (!response.ok) { throw new UploadError(data.msgServerTrouble, "resume"); }
      return {
        offset: Number(response.headers.get("Upload-Offset")),
        length: Number(response.headers.get("Upload-Length")),
      };
    }
  }

  async function send(file, offset) {
    let attempt = 0;
    let measuredFrom = { time: performance.now(), offset: offset };
    let speed = 0;
    while (offset < file.size) {
      if (paused) { return false; }
      const end = Math.min(offset + CHUNK_BYTES, file.size);
      let response = null;
      inFlight = new AbortController();
      try {
        response = await window.vault.apiFetch(uploadUrl, {
          method: "PATCH",
          headers: tusHeaders({
            "Upload-Offset": String(offset),
            "Content-Type": "application/offset+octet-stream",
          }),
          body: file.slice(offset, end),
          signal: inFlight.signal,
        });
      } catch (networkError) {
        response = null;
      } finally {
        inFlight = null;
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
        showProgress(offset, file.size);
        field("speed").textContent = speed ? formatSize(speed) + "/s" : "–";
        field("eta").textContent = speed ? formatDuration((file.size - offset) / speed) : "–";
        say(data.msgUploading);
        continue;
      }
      // Pausing cut the request off; the server kept what arrived, and resuming asks it.
      if (paused) { return false; }
      if (response && response.status === 423) {
        // Still held by a request the server has not seen end: not a failure, wait and ask.
        say(data.msgWaiting);
        await pausableSleep(lockedWait(response));
      } else if (response && response.status >= 400 && response.status < 500 && response.status !== 409) {
        throw await refusal(response);
      } else {
        // A lost connection, a 5xx or an offset conflict: wait, then ask the server where it is.
        if (attempt >= RETRY_DELAYS_MS.length) {
          throw new UploadError(response ? data.msgServerTrouble : data.msgConnectionLost, "resume");
        }
        say(data.msgRetrying);
        await pausableSleep(RETRY_DELAYS_MS[attempt]);
        attempt += 1;
      }
      if (paused) { return false; }
      let state;
      try {
        state = await probe(uploadUrl);
      } catch (error) {
        continue; // still unreachable: the next round counts it
      }
      if (state === null) { throw new UploadError(data.msgGone, "restart"); }
      offset = state.offset;
      showProgress(offset, file.size);
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
        if (recording.status === "failed") { throw new UploadError(data.msgVerifyFailed, "restart"); }
      }
      await sleep(1000);
    }
  }

  function hideOffer() {
    offer = null;
    field("offer").hidden = true;
    discardButton.hidden = true;
  }

  async function run() {
    const file = input.files && input.files[0];
    if (running) { return; }
    if (!file) { say(data.msgChooseFile, "error"); return; }
    if (file.size > Number(data.maxBytes)) { say(data.msgTooLarge, "error"); return; }
    running = true;
    paused = false;
    root.dataset.state = "uploading";
    startButton.disabled = true;
    pauseButton.disabled = false;
    resumeButton.disabled = true;
    const key = fingerprint(file);
    try {
      uploadUrl = window.localStorage.getItem(key);
      let state = uploadUrl ? await probe(uploadUrl) : null;
      if (state === null) {
        window.localStorage.removeItem(key);
        uploadUrl = await create(file);
        window.localStorage.setItem(key, uploadUrl);
        state = { offset: 0 };
      } else {
        say(data.msgResuming);
      }
      hideOffer();
      // Where the server stands, at once: a resumed upload never starts from 0 % on screen.
      showProgress(state.offset, file.size);
      const finished = await send(file, state.offset);
      if (finished) {
        window.localStorage.removeItem(key);
        pauseButton.disabled = true;
        await waitUntilAvailable();
      } else {
        // "Paused." once the server has ended the request that was cut off, at the offset
        // it kept: its HEAD answers only then.
        const state = await probe(uploadUrl).catch(() => null);
        if (state) { showProgress(state.offset, file.size); }
        say(data.msgPaused);
        root.dataset.state = "paused";
        resumeButton.disabled = false;
      }
    } catch (error) {
      const next = error instanceof UploadError ? error.next : "resume";
      if (next !== "resume") { window.localStorage.removeItem(key); }
      say(error instanceof UploadError ? error.message : data.msgConnectionLost, "error");
      root.dataset.state = "failed";
      pauseButton.disabled = true;
      resumeButton.disabled = next !== "resume";
      startButton.disabled = next === "final";
    } finally {
      running = false;
    }
  }

  function pause() {
    paused = true;
    pauseButton.disabled = true;
    root.dataset.state = "pausing";
    say(data.msgPausing);
    if (inFlight) { inFlight.abort(); }
    if (wake) { wake(); }
  }

  // After a reload: offer the unfinished upload this browser remembers for this recording,
  // at the offset the server holds, before a file is chosen again. The browser cannot
  // reopen the file by itself, so the offer names the file to choose.
  async function offerToContinue() {
    for (const entry of remembered()) {
      let state;
      try {
        state = await probe(entry.url);
      } catch (error) {
        continue; // unreachable now: kept, and offered on the next visit
      }
      if (state === null) {
        window.localStorage.removeItem(entry.key);
        continue;
      }
      if (running) { return; }
      offer = entry;
      showProgress(state.offset, state.length);
      field("offer").textContent = fill(data.msgOffer, {
        percent: percentOf(state.offset, state.length),
        name: entry.name,
        size: formatSize(entry.size),
      });
      field("offer").hidden = false;
      return;
    }
  }

  function fileChosen() {
    const file = input.files && input.files[0];
    if (!offer || !file || running) { return; }
    const same = fingerprint(file) === offer.key;
    resumeButton.disabled = !same;
    // The recording takes one upload at a time: another file needs the unfinished one
    // discarded first, which the teacher asks for knowingly.
    discardButton.hidden = same;
    say(same ? data.msgOfferChosen : fill(data.msgOfferOther, { name: offer.name, size: formatSize(offer.size) }));
  }

  // tus termination of the offered upload (the server removes what it stored and the
  // recording waits for a file again), then the chosen file goes up from the start.
  async function discardAndStart() {
    if (!offer || running) { return; }
    discardButton.disabled = true;
    try {
      const response = await window.vault.apiFetch(offer.url, { method: "DELETE", headers: tusHeaders() });
      if (!response.ok && response.status !== 404) {
        say(await problemText(response), "error");
        return;
      }
      window.localStorage.removeItem(offer.key);
      hideOffer();
      showProgress(0, 1);
    } catch (networkError) {
      say(data.msgConnectionLost, "error");
      return;
    } finally {
      discardButton.disabled = false;
    }
    await run();
  }

  startButton.addEventListener("click", run);
  pauseButton.addEventListener("click", pause);
  resumeButton.addEventListener("click", () => { resumeButton.disabled = true; run(); });
  input.addEventListener("change", fileChosen);
  discardButton.addEventListener("click", discardAndStart);
  offerToContinue();
})();
