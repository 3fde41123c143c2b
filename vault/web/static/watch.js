// The watch page: opens a view, plays its stream in the browser's own player, keeps the
// view alive with heartbeats that carry the played ranges, and moves a watermark naming
// the viewer, the time and the order over the picture. Static file: the CSP forbids
// inline code. The watermark deters copying; it cannot prevent a screen capture.
"use strict";
(function () {
  const root = document.getElementById("watch");
  if (!root || !window.vault) { return; }
  const data = root.dataset;
  const isOwner = data.owner === "true";
  const stage = root.querySelector(".watch__stage");
  const video = root.querySelector("video");
  const mark = root.querySelector(".watch__mark");
  const statusLine = root.querySelector(".watch__status");
  const MOVE_EVERY_MS = 4000;
  // The server's clock, not the viewer's: a wrong clock must not falsify the mark.
  const clockOffsetMs = Number(data.serverTime) - Date.now();
  const formatter = new Intl.DateTimeFormat("sv-SE", {
    timeZone: data.timeZone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  let view = null;
  let heartbeatTimer = null;
  let ended = false;

  function orderLine(order) {
    if (order && order.number) { return data.msgOrder.replace("{number}", order.number); }
    if (!order && isOwner) { return data.msgOwner; }
    return data.orderNumber ? data.msgOrder.replace("{number}", data.orderNumber) : "";
  }

  function renderMark() {
    mark.querySelector(".watch__mark-name").textContent = data.viewer;
    mark.querySelector(".watch__mark-time").textContent = formatter.format(new Date(Date.now() + clockOffsetMs));
    mark.querySelector(".watch__mark-order").textContent = orderLine(view ? view.order : null);
  }

  // The player's own controls cover the foot of the video element.
  const CONTROLS_PX = 48;

  // Where the picture itself lies in the stage. The video element keeps its aspect inside
  // its box (object-fit: contain), so a box of another shape (full screen, the height
  // limit) shows black bands beside or above the picture: a mark there could be cropped
  // away with the bands.
  function pictureBox() {
    const box = { left: video.offsetLeft, top: video.offsetTop,
      width: video.clientWidth, height: video.clientHeight };
    if (!video.videoWidth || !video.videoHeight || !box.width || !box.height) { return box; }
    const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
    const width = video.videoWidth * scale;
    const height = video.videoHeight * scale;
    return { left: box.left + (box.width - width) / 2, top: box.top + (box.height - height) / 2,
      width: width, height: height };
  }

  // Positions are set through the CSSOM, which the CSP allows (inline style attributes it
  // would not): anywhere inside the picture, so no corner can simply be cropped away.
  function moveMark() {
    const picture = pictureBox();
    const controlsTop = video.offsetTop + video.clientHeight - CONTROLS_PX;
    const bottom = Math.min(picture.top + picture.height, controlsTop);
    const freeX = Math.max(0, picture.width - mark.offsetWidth);
    const freeY = Math.max(0, bottom - picture.top - mark.offsetHeight);
    mark.style.left = Math.round(picture.left + Math.random() * freeX) + "px";
    mark.style.top = Math.round(picture.top + Math.random() * freeY) + "px";
  }

  // When the picture itself moves (full screen, a resized window, the video's size known),
  // the mark jumps into it at once instead of gliding there over the bands.
  function placeMark() {
    mark.style.transition = "none";
    moveMark();
    void mark.offsetWidth; // apply the jump before the transition returns
    mark.style.transition = "";
  }

  function say(text) {
    statusLine.textContent = text;
    statusLine.hidden = false;
  }

  function playedRanges() {
    const ranges = [];
    const played = video.played;
    for (let i = 0; i < played.length; i += 1) { ranges.push([played.start(i), played.end(i)]); }
    return ranges;
  }

  function report() {
    const body = { played: playedRanges() };
    if (Number.isFinite(video.duration)) { body.duration = video.duration; }
    return JSON.stringify(body);
  }

  function stop(message) {
    if (ended) { return; }
    ended = true;
    if (heartbeatTimer !== null) { clearInterval(heartbeatTimer); }
    video.pause();
    video.removeAttribute("src");
    video.load();
    root.dataset.state = "ended";
    say(message);
  }

  function post(url, keepalive) {
    return window.vault.apiFetch(url, {
      method: "POST",
      keepalive: Boolean(keepalive),
      headers: { "Content-Type": "application/json" },
      body: report(),
    });
  }

  function heartbeat() {
    if (!view || ended) { return; }
    post(view.heartbeat_url, false).then((response) => {
      if (response.status === 401 || response.status === 403 || response.status === 410) {
        stop(data.msgEnded);
      }
    }).catch(() => { /* a lost heartbeat is retried at the next tick */ });
  }

  function start() {
    window.vault.apiFetch(data.startUrl, { method: "POST" }).then((response) => {
      if (!response.ok) { throw new Error("view refused"); }
      return response.json();
    }).then((opened) => {
      view = opened;
      root.dataset.viewId = opened.view_id;
      root.dataset.state = "playing";
      renderMark();
      video.src = opened.stream_url;
      heartbeatTimer = setInterval(heartbeat, opened.heartbeat_seconds * 1000);
    }).catch(() => stop(data.msgEnded));
  }

  // A refused stream request surfaces as a media error; the heartbeat tells whether access
  // has ended or playing failed for another reason.
  video.addEventListener("error", () => {
    if (!view || ended) { stop(data.msgFailed); return; }
    post(view.heartbeat_url, false).then((response) => {
      stop(response.ok ? data.msgFailed : data.msgEnded);
    }).catch(() => stop(data.msgFailed));
  });
  if (!isOwner) {
    // No "Save video as…": the native menu would offer the download the controls hide.
    stage.addEventListener("contextmenu", (event) => event.preventDefault());
  }
  // Full screen for the whole stage, so the watermark stays over the picture. The player's
  // own full-screen control is off (controlslist="nofullscreen"): it would show the video
  // element alone, without the mark. A double click, which would do the same, toggles the
  // stage instead; should the video element still get there, the stage takes its place.
  function toggleFullscreen() {
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
    } else if (stage.requestFullscreen) {
      stage.requestFullscreen().catch(() => {});
    }
  }
  root.querySelector('[data-action="fullscreen"]').addEventListener("click", toggleFullscreen);
  video.addEventListener("dblclick", (event) => {
    event.preventDefault();
    toggleFullscreen();
  });
  document.addEventListener("fullscreenchange", () => {
    if (document.fullscreenElement === video) {
      document.exitFullscreen().then(() => stage.requestFullscreen()).catch(() => {});
    }
  });
  video.addEventListener("loadedmetadata", placeMark);
  if (window.ResizeObserver) { new ResizeObserver(placeMark).observe(video); }
  window.addEventListener("pagehide", () => {
    if (view && !ended) { post(view.end_url, true).catch(() => {}); }
  });

  renderMark();
  placeMark();
  setInterval(renderMark, 1000);
  setInterval(moveMark, MOVE_EVERY_MS);
  start();
})();
