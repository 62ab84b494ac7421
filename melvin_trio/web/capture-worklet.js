// AudioWorklet processor: microphone frames in (at the context's rate, any channel count), 16 kHz mono s16le out.
// A windowed-sinc low-pass (cut-off just under 8 kHz) runs before the fractional resampler, so nothing above the
// new Nyquist frequency folds back into speech. Chunks of CHUNK samples (100 ms) go to the page; "flush" sends
// what is left and answers "flushed".
const TARGET_RATE = 16000;
const CHUNK = 1600;
const TAPS = 63;

function lowPass(ratio) {
  if (ratio <= 1) return null;
  const cutoff = 0.45 / ratio; // cycles per input sample: 0.9 x the output Nyquist frequency
  const h = new Float32Array(TAPS);
  const mid = (TAPS - 1) / 2;
  let sum = 0;
  for (let n = 0; n < TAPS; n++) {
    const x = n - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * n) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * n) / (TAPS - 1));
    h[n] = sinc * blackman;
    sum += h[n];
  }
  for (let n = 0; n < TAPS; n++) h[n] /= sum;
  return h;
}

class MelvinCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / TARGET_RATE; // input samples per output sample
    this.filter = lowPass(this.ratio);
    this.history = new Float32Array(TAPS); // the last TAPS input samples, for the filter
    this.filtered = []; // filtered input not yet consumed by the resampler
    this.position = 0; // where the next output sample lies, in samples of `filtered`
    this.out = new Int16Array(CHUNK);
    this.count = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.send();
        this.running = false;
        this.port.postMessage("flushed");
      }
    };
  }

  send() {
    if (this.count === 0) return;
    const chunk = this.out.slice(0, this.count);
    this.port.postMessage(chunk.buffer, [chunk.buffer]);
    this.count = 0;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.out[this.count++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.count === CHUNK) this.send();
  }

  process(inputs) {
    const channels = inputs[0];
    if (!this.running) return false;
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sample = 0;
      for (let c = 0; c < channels.length; c++) sample += channels[c][i];
      sample /= channels.length;
      if (this.filter) {
        this.history.copyWithin(0, 1);
        this.history[TAPS - 1] = sample;
        let acc = 0;
        for (let n = 0; n < TAPS; n++) acc += this.filter[n] * this.history[n];
        sample = acc;
      }
      this.filtered.push(sample);
    }
    const f = this.filtered;
    while (this.position + 1 < f.length) {
      const i = Math.floor(this.position);
      const frac = this.position - i;
      this.emit(f[i] * (1 - frac) + f[i + 1] * frac);
      this.position += this.ratio;
    }
    const used = Math.min(Math.floor(this.position), f.length);
    this.filtered = f.slice(used);
    this.position -= used;
    return true;
  }
}

registerProcessor("melvin-capture", MelvinCapture);
