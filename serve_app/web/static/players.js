// Players: one <audio> per stem (and the original, when this page still has the file), solo and mute,
// a transport that plays every stem together, and a short tone for a clicked note.

export class Players {
  constructor(table, playAllButton, clock, { onTime } = {}) {
    this.body = table.tBodies[0];
    this.playAllButton = playAllButton;
    this.clock = clock;
    this.onTime = onTime || (() => {});
    this.rows = []; // {name, audio, isStem, solo, mute}
    this.urls = [];
    playAllButton.addEventListener("click", () => this.toggleAll());
  }

  clear() {
    this.pauseAll();
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    this.rows = [];
    this.body.replaceChildren();
    this.setClock(0);
  }

  // src: a blob or a URL; isStem: false for the original, which plays alone and never with the stems.
  add(name, src, colour, isStem) {
    const url = src instanceof Blob ? URL.createObjectURL(src) : src;
    if (src instanceof Blob) this.urls.push(url);
    const audio = new Audio();
    audio.preload = "auto";
    audio.controls = true;
    audio.src = url;
    audio.dataset.stem = name;
    const row = { name, audio, isStem, solo: false, mute: false };
    this.rows.push(row);

    const tr = document.createElement("tr");
    tr.dataset.player = name;
    const label = document.createElement("td");
    label.innerHTML = `<span class="swatch"></span>`;
    label.querySelector(".swatch").style.background = colour;
    label.append(name);
    const player = document.createElement("td");
    player.append(audio);
    const buttons = document.createElement("td");
    if (isStem) {
      buttons.append(this.button("Solo", "solo", row), this.button("Mute", "mute", row));
    }
    tr.append(label, player, buttons);
    this.body.append(tr);

    audio.addEventListener("timeupdate", () => this.tick(audio));
    audio.addEventListener("play", () => {
      // The original and the stems are different mixes of the same music: one of them at a time.
      for (const other of this.rows) if (other.isStem !== isStem) other.audio.pause();
      this.startTicking(audio);
      this.updatePlayAll();
    });
    audio.addEventListener("pause", () => this.updatePlayAll());
    this.applyMutes();
  }

  button(text, kind, row) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `small ${kind}`;
    b.textContent = text;
    b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", () => {
      row[kind] = !row[kind];
      b.setAttribute("aria-pressed", String(row[kind]));
      this.applyMutes();
    });
    return b;
  }

  // A soloed stem plays; with any solo on, the others are silent; a muted stem is silent either way.
  applyMutes() {
    const stems = this.rows.filter((r) => r.isStem);
    const anySolo = stems.some((r) => r.solo);
    for (const r of stems) r.audio.muted = r.mute || (anySolo && !r.solo);
  }

  stems() {
    return this.rows.filter((r) => r.isStem).map((r) => r.audio);
  }

  playing() {
    return this.stems().some((a) => !a.paused);
  }

  async toggleAll() {
    if (this.playing()) {
      this.pauseAll();
      return;
    }
    const stems = this.stems();
    if (!stems.length) return;
    const start = stems[0].currentTime;
    for (const a of stems) a.currentTime = start;
    await Promise.all(stems.map((a) => a.play().catch(() => {})));
    this.updatePlayAll();
  }

  pauseAll() {
    for (const r of this.rows) r.audio.pause();
    this.updatePlayAll();
  }

  seek(seconds) {
    for (const r of this.rows) r.audio.currentTime = seconds;
    this.tick(this.rows[0]?.audio);
  }

  updatePlayAll() {
    this.playAllButton.textContent = this.playing() ? "Pause" : "Play all stems";
  }

  // timeupdate fires only a few times a second; while playing, follow the audio every frame.
  startTicking(audio) {
    const step = () => {
      if (audio.paused) return;
      this.tick(audio);
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  tick(audio) {
    if (!audio) return;
    this.setClock(audio.currentTime);
    this.onTime(audio.currentTime);
  }

  setClock(seconds) {
    const m = Math.floor(seconds / 60);
    const s = (seconds % 60).toFixed(1).padStart(4, "0");
    this.clock.textContent = `${m}:${s}`;
  }
}

// A clicked note, as a short tone at its pitch (equal temperament, A4 = 440 Hz). One AudioContext for the
// page: browsers limit how many may exist, and the first has to start from a user gesture anyway.
let context = null;

export function playNote(pitch, velocity = 96, seconds = 0.5) {
  context = context || new AudioContext();
  const now = context.currentTime;
  const osc = context.createOscillator();
  const gain = context.createGain();
  osc.type = "triangle";
  osc.frequency.value = 440 * 2 ** ((pitch - 69) / 12);
  const peak = 0.3 * (velocity / 127);
  // A short attack and release, so the tone does not click.
  gain.gain.setValueAtTime(0, now);
  gain.gain.linearRampToValueAtTime(peak, now + 0.01);
  gain.gain.setValueAtTime(peak, now + seconds - 0.05);
  gain.gain.linearRampToValueAtTime(0, now + seconds);
  osc.connect(gain).connect(context.destination);
  osc.start(now);
  osc.stop(now + seconds);
  return osc.frequency.value;
}
