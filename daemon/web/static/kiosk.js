// The kiosk screen: camera -> JPEG frames -> WebSocket /capture -> overlay, guidance, countdown -> report.
// Plain ES module, no build step, no dependencies. The pure functions are exported so that the tests can
// drive them in Chromium against the capture protocol (docs/capture.md, protocol 1) without a camera.

// BlazePose's 33-landmark skeleton and the seed's 17-point layout (README "Keypoint layouts").
export const BLAZEPOSE_EDGES = [
  [11, 12], [11, 13], [13, 15], [12, 14], [14, 16], [11, 23], [12, 24], [23, 24], [23, 25], [25, 27],
  [24, 26], [26, 28], [27, 29], [29, 31], [27, 31], [28, 30], [30, 32], [28, 32], [7, 2], [8, 5], [0, 2], [0, 5],
];
export const LAYOUT17_EDGES = [
  [0, 16], [16, 1], [1, 2], [2, 3], [3, 4], [1, 5], [5, 6], [6, 7], [1, 15], [15, 14], [14, 8], [14, 11],
  [8, 9], [9, 10], [11, 12], [12, 13],
];
// Frames sent but not yet answered by a guide event: more would only queue up (the daemon keeps the
// newest anyway), fewer would leave the live path idle while a frame travels.
export const MAX_FRAMES_IN_FLIGHT = 2;
// The captured frame becomes the analysed photo: a portrait kiosk camera's full 1080x1920 goes as it is.
export const MAX_FRAME_SIDE = 1920;
export const JPEG_QUALITY = 0.85;

/** The WebSocket URL of a capture session for this page's origin. */
export function captureUrl(location, params) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams();
  // token: browsers cannot set headers on a WebSocket, so the daemon takes its bearer token here.
  for (const key of ["uuid", "id", "height", "kiosk", "lang", "token"]) {
    const value = params[key];
    if (value !== undefined && value !== null && String(value) !== "") query.set(key, String(value));
  }
  return `${scheme}//${location.host}/capture?${query.toString()}`;
}

/** A new uuid for a session (crypto.randomUUID needs a secure context; a LAN kiosk over http has none). */
export function newUuid(cryptoObject = globalThis.crypto) {
  if (cryptoObject && typeof cryptoObject.randomUUID === "function") return cryptoObject.randomUUID();
  const bytes = new Uint8Array(16);
  cryptoObject.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Keypoints as [[x, y, visibility]] whatever form the guide event uses ([x, y], [x, y, v], {x, y}). */
export function normaliseKeypoints(raw) {
  if (!Array.isArray(raw)) return [];
  // One list per person: take the first (the analysed subject comes first).
  if (raw.length && Array.isArray(raw[0]) && Array.isArray(raw[0][0])) raw = raw[0];
  return raw.map((p) => {
    if (Array.isArray(p)) return [Number(p[0]), Number(p[1]), p.length > 2 ? Number(p[2]) : 1];
    if (p && typeof p === "object") return [Number(p.x), Number(p.y), p.visibility ?? p.v ?? 1];
    return [NaN, NaN, 0];
  });
}

/** Which skeleton edges fit a keypoint list. */
export function edgesFor(count) {
  if (count >= 33) return BLAZEPOSE_EDGES;
  if (count >= 17) return LAYOUT17_EDGES;
  return [];
}

/** A guide message's text: strings as they are, {text}/{en, ko} objects in the chosen language. */
export function messageText(message, lang) {
  if (typeof message === "string") return message;
  if (message && typeof message === "object") {
    if (typeof message[lang] === "string") return message[lang];
    if (typeof message.text === "string") return message.text;
    if (message.text && typeof message.text === "object") return message.text[lang] ?? message.text.en ?? "";
    if (typeof message.en === "string") return message.en;
  }
  return "";
}

/** The person's box as {x, y, w, h}: the seed's [x, y, w, h], or an object. */
export function normaliseBox(raw) {
  if (Array.isArray(raw) && raw.length >= 4) {
    const box = Array.isArray(raw[0]) ? raw[0] : raw;
    return { x: +box[0], y: +box[1], w: +box[2], h: +box[3] };
  }
  if (raw && typeof raw === "object" && "x" in raw) return { x: +raw.x, y: +raw.y, w: +raw.w, h: +raw.h };
  return null;
}

function errorText(error) {
  const data = (error && (error.data || error)) || {};
  return data.detail || data.errors || data.message || "error";
}

/**
 * The screen state after one server message (a pure reducer: state in, state out), per docs/capture.md.
 * state: {phase: "live"|"analysing"|"result"|"error", view, ready, messages, countdown, keypoints, box,
 *         frameSize, lastFrameAnswered, captured: {front, side}, answer, error, notice, dropped}
 */
export function reduce(state, message, lang) {
  const next = { ...state };
  const event = message && message.event;
  if (event === "session") {
    next.view = message.view || state.view;
  } else if (event === "guide") {
    next.phase = "live";
    next.view = message.view || state.view;
    next.ready = Boolean(message.ready);
    next.messages = (message.messages || []).map((m) => messageText(m, lang)).filter(Boolean);
    next.countdown = typeof message.countdown === "number" ? message.countdown : null;
    const person = message.person || null;
    next.keypoints = normaliseKeypoints(person ? person.keypoints : message.keypoints);
    next.box = normaliseBox(person ? person.box : message.box);
    if (Array.isArray(message.image_size)) next.frameSize = message.image_size;
    if (typeof message.frame === "number") next.lastFrameAnswered = Math.max(state.lastFrameAnswered ?? -1, message.frame);
    if (typeof message.dropped === "number") next.dropped = message.dropped;
    next.notice = null;
  } else if (event === "captured") {
    next.captured = { ...(state.captured || {}), [message.view]: true };
    // `next` names the next view; null after the last one (the analysis starts).
    if (message.next === null || (message.next === undefined && message.view === "side")) next.phase = "analysing";
    else if (message.next) next.view = message.next;
    next.keypoints = [];
    next.messages = [];
    next.countdown = null;
    next.ready = false;
  } else if (event === "restarted") {
    // The answer to the restart command: the views taken so far are forgotten.
    next.phase = "live";
    next.view = message.view || "front";
    next.captured = {};
    next.keypoints = [];
    next.messages = [];
    next.countdown = null;
    next.ready = false;
  } else if (event === "analysing") {
    next.phase = "analysing";
  } else if (event === "result") {
    const answer = message.answer || {};
    if (answer.state === 0) {
      next.phase = "result";
      next.answer = answer;
    } else {
      next.phase = "error";
      next.error = errorText(answer);
    }
  } else if (event === "error") {
    if (message.fatal) {
      next.phase = "error";
      next.error = errorText(message.error);
    } else {
      next.notice = errorText(message.error);  // a bad frame or command: the session goes on
    }
  }
  return next;
}

/** May another frame go out now? (flow control: at most MAX_FRAMES_IN_FLIGHT unanswered frames) */
export function maySend(framesSent, lastFrameAnswered, bufferedAmount = 0) {
  return bufferedAmount < 4 * 1024 * 1024 && framesSent - 1 - (lastFrameAnswered ?? -1) < MAX_FRAMES_IN_FLIGHT;
}

/** The frame's size, scaled so that its long side is at most maxSide. */
export function frameSize(width, height, maxSide = MAX_FRAME_SIDE) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  return [Math.round(width * scale), Math.round(height * scale)];
}

// A standing figure to step into, as a closed outline in a unit box (x 0..1 across, y 0..1 down).
const FRONT_OUTLINE = [
  [0.5, 0.0], [0.56, 0.02], [0.58, 0.08], [0.55, 0.13], [0.54, 0.15], [0.7, 0.18], [0.75, 0.22], [0.8, 0.48],
  [0.75, 0.49], [0.69, 0.27], [0.66, 0.5], [0.64, 0.72], [0.62, 0.97], [0.55, 1.0], [0.53, 0.73], [0.5, 0.53],
  [0.47, 0.73], [0.45, 1.0], [0.38, 0.97], [0.36, 0.72], [0.34, 0.5], [0.31, 0.27], [0.25, 0.49], [0.2, 0.48],
  [0.25, 0.22], [0.3, 0.18], [0.46, 0.15], [0.45, 0.13], [0.42, 0.08], [0.44, 0.02],
];
const SIDE_OUTLINE = [
  [0.5, 0.0], [0.56, 0.02], [0.58, 0.08], [0.56, 0.13], [0.55, 0.16], [0.6, 0.2], [0.6, 0.35], [0.59, 0.5],
  [0.58, 0.72], [0.58, 0.95], [0.63, 0.98], [0.62, 1.0], [0.45, 1.0], [0.46, 0.95], [0.45, 0.72], [0.42, 0.5],
  [0.42, 0.35], [0.44, 0.2], [0.47, 0.16], [0.46, 0.13], [0.43, 0.08], [0.44, 0.02],
];

/** The outline's points on a canvas of width x height (the figure 80% of the height, feet near the bottom). */
export function outlinePoints(view, width, height) {
  const shape = view === "side" ? SIDE_OUTLINE : FRONT_OUTLINE;
  const h = height * 0.8;
  const w = h * 0.5;
  const left = (width - w) / 2;
  const top = height * 0.1;
  return shape.map(([x, y]) => [left + x * w, top + y * h]);
}

// ---------------------------------------------------------------------------------------------------
// The page itself.

function el(id) { return document.getElementById(id); }

function authHeaders() {
  const token = sessionStorage.getItem("skeleton-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function startKiosk(options) {
  const texts = options.texts;
  let lang = options.lang;
  const params = new URLSearchParams(location.search);
  // A kiosk beyond loopback is opened as /kiosk#token=<bearer token>; the fragment never reaches a log.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) sessionStorage.setItem("skeleton-token", fragment.get("token"));
  if (params.get("id")) el("member-id").value = params.get("id");
  if (params.get("height")) el("member-height").value = params.get("height");

  const video = el("camera");
  const overlay = el("overlay");
  const stage = el("stage");
  const grab = document.createElement("canvas");
  let socket = null;
  let stream = null;
  let state = null;
  let framesSent = 0;
  let timer = null;
  let resetTimer = null;

  const t = (key) => (texts[lang] && texts[lang][key]) || texts.en[key] || key;

  function setGuide(main, detail) {
    el("guide-main").textContent = main || "";
    el("guide-detail").textContent = detail || "";
  }

  function layoutStage() {
    const vw = video.videoWidth || 9, vh = video.videoHeight || 16;
    const area = el("stage-area").getBoundingClientRect();
    const scale = Math.min(area.width / vw, area.height / vh);
    stage.style.width = `${Math.floor(vw * scale)}px`;
    stage.style.height = `${Math.floor(vh * scale)}px`;
    overlay.width = Math.floor(vw * scale);
    overlay.height = Math.floor(vh * scale);
    draw();
  }

  function draw() {
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    if (!state || state.phase !== "live") return;
    const ready = state.ready;
    ctx.lineWidth = Math.max(3, overlay.width / 150);
    ctx.setLineDash([14, 10]);
    ctx.strokeStyle = ready ? "rgba(46, 204, 113, 0.95)" : "rgba(255, 255, 255, 0.85)";
    ctx.beginPath();
    outlinePoints(state.view, overlay.width, overlay.height).forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.stroke();
    ctx.setLineDash([]);
    const [fw, fh] = state.frameSize || [video.videoWidth, video.videoHeight];
    const sx = overlay.width / (fw || 1), sy = overlay.height / (fh || 1);
    const points = state.keypoints || [];
    ctx.strokeStyle = ready ? "#2ecc71" : "#ffb300";
    ctx.lineWidth = Math.max(3, overlay.width / 200);
    for (const [a, b] of edgesFor(points.length)) {
      const p = points[a], q = points[b];
      if (!p || !q || p[0] < 0 || q[0] < 0 || !isFinite(p[0]) || !isFinite(q[0]) || p[2] < 0.3 || q[2] < 0.3) continue;
      ctx.beginPath();
      ctx.moveTo(p[0] * sx, p[1] * sy);
      ctx.lineTo(q[0] * sx, q[1] * sy);
      ctx.stroke();
    }
    ctx.fillStyle = ctx.strokeStyle;
    for (const p of points) {
      if (p[0] < 0 || !isFinite(p[0]) || p[2] < 0.3) continue;
      ctx.beginPath();
      ctx.arc(p[0] * sx, p[1] * sy, Math.max(3, overlay.width / 180), 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  function render() {
    document.body.dataset.phase = state ? state.phase : "idle";
    if (!state) return;
    el("view-front").classList.toggle("done", Boolean(state.captured && state.captured.front));
    el("view-side").classList.toggle("done", Boolean(state.captured && state.captured.side));
    el("view-front").classList.toggle("now", state.view !== "side");
    el("view-side").classList.toggle("now", state.view === "side");
    if (state.phase === "live") {
      const prompt = state.view === "side" ? t("side_prompt") : t("front_prompt");
      const main = state.messages.length ? state.messages[0] : (state.ready ? t("hold") : prompt);
      setGuide(main, state.notice || state.messages.slice(1).join(" · ") || (state.messages.length ? prompt : ""));
      const countdown = state.countdown;
      el("countdown").textContent = countdown !== null && countdown !== undefined && state.ready
        ? String(Math.max(1, Math.ceil(countdown))) : "";
    } else if (state.phase === "analysing") {
      setGuide(t("analysing"), "");
      el("countdown").textContent = "";
    } else if (state.phase === "error") {
      setGuide(t("error"), state.error || "");
      el("countdown").textContent = "";
    }
    draw();
  }

  async function showResult(answer) {
    stopCamera();
    setGuide("", "");
    const uuid = answer.uuid;
    let link = null;
    try {
      const reply = await fetch(`/report/${encodeURIComponent(uuid)}/link`, { headers: authHeaders() });
      if (reply.ok) link = await reply.json();
    } catch (error) { /* the report below still opens on loopback */ }
    const src = link ? `${link.url.replace(/^https?:\/\/[^/]+/, "")}&lang=${lang}` : `/report/${encodeURIComponent(uuid)}?lang=${lang}`;
    el("report-frame").src = src;
    el("qr").innerHTML = link ? link.qr_svg : "";
    el("qr-caption").textContent = link ? t("scan") : "";
    document.body.dataset.phase = "result";
    document.body.dataset.reportUuid = uuid;
    el("view-front").classList.add("done");
    el("view-side").classList.add("done");
    const resetAfter = Number(params.get("reset") || 180);
    if (resetAfter > 0) resetTimer = setTimeout(reset, resetAfter * 1000);
  }

  function stopCamera() {
    clearTimeout(timer);
    timer = null;
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    if (stream) { stream.getTracks().forEach((track) => track.stop()); stream = null; }
    video.srcObject = null;
  }

  function reset() {
    clearTimeout(resetTimer);
    stopCamera();
    state = null;
    for (const id of ["view-front", "view-side"]) el(id).classList.remove("done", "now");
    el("view-front").classList.add("now");
    el("report-frame").removeAttribute("src");
    el("qr").innerHTML = "";
    document.body.dataset.phase = "idle";
    setGuide(t("front_prompt"), "");
  }

  function sendFrame() {
    timer = setTimeout(sendFrame, 1000 / Number(params.get("fps") || 15));
    if (!socket || socket.readyState !== WebSocket.OPEN || !video.videoWidth) return;
    if (!state || state.phase !== "live") return;
    if (!maySend(framesSent, state.lastFrameAnswered, socket.bufferedAmount)) return;
    const [w, h] = frameSize(video.videoWidth, video.videoHeight);
    grab.width = w;
    grab.height = h;
    grab.getContext("2d").drawImage(video, 0, 0, w, h);
    state.frameSize = state.frameSize || [w, h];
    framesSent += 1;
    grab.toBlob((blob) => { if (blob && socket && socket.readyState === WebSocket.OPEN) socket.send(blob); },
      "image/jpeg", JPEG_QUALITY);
  }

  async function start() {
    reset();
    const memberId = el("member-id").value.trim();
    if (!memberId) { el("member-id").focus(); return; }
    document.body.dataset.phase = "starting";
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1080 }, height: { ideal: 1920 }, facingMode: "user" }, audio: false,
      });
    } catch (error) {
      state = { phase: "error", error: `${t("camera_error")}: ${error.name}` };
      render();
      return;
    }
    video.srcObject = stream;
    await video.play();
    layoutStage();
    framesSent = 0;
    state = { phase: "live", view: "front", ready: false, messages: [], countdown: null, keypoints: [],
              box: null, frameSize: null, lastFrameAnswered: -1, captured: {}, answer: null, error: null };
    const url = captureUrl(location, {
      uuid: params.get("uuid") || newUuid(), id: memberId, height: el("member-height").value.trim(),
      kiosk: params.get("kiosk"), lang, token: sessionStorage.getItem("skeleton-token"),
    });
    socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      let message;
      try { message = JSON.parse(event.data); } catch (error) { return; }
      state = reduce(state, message, lang);
      if (state.phase === "result" && state.answer) { showResult(state.answer); return; }
      render();
    };
    socket.onclose = (event) => {
      if (state && (state.phase === "live" || state.phase === "analysing")) {
        state = { ...state, phase: "error", error: event.reason || t("connection_lost") };
        render();
      }
    };
    socket.onopen = () => sendFrame();
    render();
  }

  function setLang(next) {
    lang = next;
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
    render();
  }

  el("start").addEventListener("click", start);
  el("restart").addEventListener("click", () => {
    if (socket && socket.readyState === WebSocket.OPEN && state && state.phase === "live") {
      socket.send(JSON.stringify({ command: "restart" }));
      state = { ...state, captured: {}, view: "front" };
      render();
    } else start();
  });
  el("capture-now").addEventListener("click", () => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ command: "capture" }));
  });
  el("again").addEventListener("click", reset);
  for (const button of document.querySelectorAll("[data-lang]")) button.addEventListener("click", () => setLang(button.dataset.lang));
  window.addEventListener("resize", layoutStage);
  video.addEventListener("loadedmetadata", layoutStage);
  setLang(lang);
  setGuide(t("front_prompt"), "");
  if (params.get("autostart") === "1") start();
  return { state: () => state, start, reset, setLang };
}
