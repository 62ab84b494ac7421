// The live captioning page: microphone (AudioWorklet) or a dropped file -> 16 kHz s16le -> the Melvin WebSocket
// protocol; partials in grey, finals appended; at the end the exports, fetched with the key and offered as downloads.
// The API key lives in this page's memory only (never stored).
"use strict";

const SAMPLE_RATE = 16000;
const CHUNK_SECONDS = 0.1;
const WAITING_NOTICE = "No transcription workers available";
const STREAM_ID = /^[0-9a-f]{32}$/;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("controls"), key: $("key"), language: $("language"), toggle: $("toggle"), url: $("url"),
  status: $("status"), captions: $("captions"), partial: $("partial"), file: $("file"),
  exports: $("exports"), streamId: $("stream-id"), links: $("export-links"),
};

let session = null; // the running stream, or null
let serverInfo = { websocket_port: null, exports: [] };
const objectUrls = [];

function status(text, kind = "") {
  ui.status.textContent = text;
  ui.status.className = kind;
}

async function loadServerInfo() {
  try {
    const response = await fetch("/web/config.json", { cache: "no-store" });
    if (response.ok) serverInfo = await response.json();
  } catch (error) {
    console.warn("no /web/config.json", error);
  }
  const override = new URLSearchParams(location.search).get("ws") || serverInfo.websocket_url;
  if (override) {
    ui.url.value = override;
  } else {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const port = serverInfo.websocket_port || location.port;
    ui.url.value = `${scheme}//${location.hostname}${port ? ":" + port : ""}/`;
  }
}

function resetView() {
  for (const node of [...ui.captions.querySelectorAll(".final")]) node.remove();
  ui.partial.textContent = "";
  ui.exports.hidden = true;
  ui.links.replaceChildren();
  while (objectUrls.length) URL.revokeObjectURL(objectUrls.pop());
}

function addFinal(text) {
  const span = document.createElement("span");
  span.className = "final";
  span.textContent = text;
  ui.captions.insertBefore(span, ui.partial);
  ui.partial.textContent = "";
  ui.captions.scrollTop = ui.captions.scrollHeight;
}

// One stream over the WebSocket. `source` feeds it audio: start(send) -> stop().
class Session {
  constructor(url, key, language, source) {
    this.key = key;
    this.source = source;
    this.streamId = null;
    this.ended = false;
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.opened(language);
    this.ws.onmessage = (event) => this.received(event.data);
    this.ws.onerror = () => status(`Cannot connect to ${url}`, "error");
    this.ws.onclose = () => this.closed();
  }

  async opened(language) {
    const first = { Authorization: this.key };
    if (language) first.language = language;
    this.ws.send(JSON.stringify(first));
    status("Streaming…");
    try {
      await this.source.start((pcm) => this.sendAudio(pcm), () => this.stop());
    } catch (error) {
      status(`No audio: ${error.message || error}`, "error");
      this.stop();
    }
  }

  sendAudio(pcm) {
    if (!this.ended && this.ws.readyState === WebSocket.OPEN) this.ws.send(pcm);
  }

  received(data) {
    if (typeof data !== "string") return;
    let message = null;
    if (data.startsWith("{")) {
      try { message = JSON.parse(data); } catch { message = null; }
    }
    if (message && typeof message.partial === "string") {
      ui.partial.textContent = message.partial;
      if (!this.ended) status("Streaming…");
    } else if (message && typeof message.text === "string") {
      addFinal(message.text);
    } else if (STREAM_ID.test(data)) {
      this.streamId = data;
    } else if (data.startsWith(WAITING_NOTICE)) {
      status(`${data} (your audio is kept and transcribed once a seat is free)`, "waiting");
    } else {
      status(data, "error");
    }
  }

  // Stop the audio, send what is left and eof; the server answers with the last final, the id, and closes.
  async stop() {
    if (this.ended) return;
    this.ended = true;
    setButton(false, "Finishing…");
    await this.source.stop();
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send("eof");
      status("Finishing: waiting for the last captions…");
    }
  }

  closed() {
    this.ended = true;
    this.source.stop();
    session = null;
    setButton(false);
    if (this.streamId) {
      if (!ui.status.classList.contains("error")) status("Done.");
      showExports(this.streamId, this.key);
    } else if (!ui.status.classList.contains("error")) {
      status("The connection closed.", "error");
    }
  }
}

// The microphone through an AudioWorklet that low-passes, resamples to 16 kHz and converts to s16le.
class Microphone {
  async start(send) {
    this.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("/web/capture-worklet.js");
    this.node = new AudioWorkletNode(this.context, "melvin-capture", { numberOfOutputs: 1 });
    this.flushed = new Promise((resolve) => {
      this.node.port.onmessage = (event) => (event.data === "flushed" ? resolve() : send(event.data));
    });
    this.context.createMediaStreamSource(this.media).connect(this.node);
    this.node.connect(this.context.destination); // keeps the graph pulling; the node outputs silence
  }

  async stop() {
    if (!this.node) return;
    const node = this.node;
    this.node = null;
    node.port.postMessage("flush");
    await Promise.race([this.flushed, new Promise((resolve) => setTimeout(resolve, 500))]);
    for (const track of this.media.getTracks()) track.stop();
    await this.context.close();
  }
}

// A file decoded by the browser (WAV, and whatever else it decodes), resampled to 16 kHz by an
// OfflineAudioContext, and sent in real time, 100 ms at a time; at its end the stream stops by itself.
class FileSource {
  constructor(file) { this.file = file; }

  async start(send, finished) {
    const decoder = new OfflineAudioContext(1, 1, SAMPLE_RATE);
    const audio = await decoder.decodeAudioData(await this.file.arrayBuffer());
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const data = audio.getChannelData(c);
      for (let i = 0; i < data.length; i++) mono[i] += data[i] / audio.numberOfChannels;
    }
    const chunk = Math.round(SAMPLE_RATE * CHUNK_SECONDS);
    const began = performance.now();
    this.stopped = false;
    for (let offset = 0; offset < mono.length && !this.stopped; offset += chunk) {
      const part = mono.subarray(offset, offset + chunk);
      const pcm = new Int16Array(part.length);
      for (let i = 0; i < part.length; i++) {
        const s = Math.max(-1, Math.min(1, part[i]));
        pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
      }
      send(pcm.buffer);
      const due = began + ((offset + part.length) / SAMPLE_RATE) * 1000;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
    }
    if (!this.stopped) finished();
  }

  async stop() { this.stopped = true; }
}

// An export fetched with the key and offered as a download; `optional` ones (subtitles: not every server version
// has them) are left out when the server does not know the route.
async function download(url, key, name, label, optional) {
  const item = document.createElement("li");
  ui.links.append(item);
  try {
    const response = await fetch(url, { headers: { Authorization: key } });
    if (!response.ok) {
      if (optional && response.status === 404) item.remove();
      else item.textContent = `${label}: ${response.status}`;
      return;
    }
    const href = URL.createObjectURL(await response.blob());
    objectUrls.push(href);
    const link = document.createElement("a");
    link.href = href;
    link.download = name;
    link.textContent = label;
    link.dataset.export = url;
    item.append(link);
  } catch (error) {
    item.textContent = `${label}: ${error.message || error}`;
  }
}

async function showExports(id, key) {
  ui.streamId.textContent = id;
  ui.exports.hidden = false;
  const wanted = [
    [`/export/audio/${id}`, `${id}.wav`, "Audio (WAV)", false],
    [`/export/transcript/${id}`, `${id}.json`, "Transcript (JSON)", false],
    [`/export/subtitles/${id}?format=vtt`, `${id}.vtt`, "Subtitles (WebVTT)", true],
    [`/export/subtitles/${id}?format=srt`, `${id}.srt`, "Subtitles (SRT)", true],
  ];
  for (const [url, name, label, optional] of wanted) await download(url, key, name, label, optional);
  ui.exports.dataset.ready = "true";
}

function setButton(running, label) {
  ui.toggle.textContent = label || (running ? "Stop" : "Start");
  ui.toggle.classList.toggle("running", running);
  ui.toggle.disabled = Boolean(label);
}

function begin(source) {
  if (session) return;
  if (!ui.key.value) {
    status("Enter the API key first.", "error");
    ui.key.focus();
    return;
  }
  resetView();
  status("Connecting…");
  setButton(true);
  session = new Session(ui.url.value.trim(), ui.key.value, ui.language.value, source);
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (session) session.stop();
  else begin(new Microphone());
});

ui.file.addEventListener("change", () => {
  if (ui.file.files.length) begin(new FileSource(ui.file.files[0]));
  ui.file.value = "";
});

document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) begin(new FileSource(file));
});

loadServerInfo();
