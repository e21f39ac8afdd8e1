// The piano roll: notes.json on a <canvas>, one colour per stem, bar lines and beats from its beat grid.
// Only the visible window is drawn (the canvas is as wide as the view, not the song), so a long song at a
// high zoom does not hit the browser's canvas size limit; the scroll container's track gives it a scrollbar.

const PALETTE = {
  vocals: "#e6194b", drums: "#f58231", bass: "#4363d8", other: "#3cb44b",
  harmonic: "#911eb4", mix: "#008080", piano: "#9a6324", guitar: "#f032e6",
};
const SPARE = ["#808000", "#000075", "#aa6e28", "#46f0f0", "#800000", "#ffe119"];

export function stemColours(stems) {
  let spare = 0;
  return Object.fromEntries(stems.map((s) => [s, PALETTE[s] || SPARE[spare++ % SPARE.length]]));
}

// The bar number of the first tracked downbeat, as notes.json (and a DAW reading transcription.mid) counts
// bars: whatever comes before the first bar line is bar 1, a pickup, so that line is usually bar 2. The
// notes say which: a note's bar, less the downbeats before it. Without notes, the pickup rule decides.
export function firstBarNumber(doc) {
  const downbeats = doc.downbeats || [];
  if (!downbeats.length) return 1;
  for (const n of doc.notes || []) {
    if (n.start < downbeats[0] || typeof n.bar !== "number") continue;
    let i = 0;
    while (i + 1 < downbeats.length && downbeats[i + 1] <= n.start) i++;
    // A note right at a bar line may be counted on either side of it (rounding): ask one inside a bar.
    const next = i + 1 < downbeats.length ? downbeats[i + 1] : Infinity;
    if (n.start - downbeats[i] < 0.05 || next - n.start < 0.05) continue;
    return n.bar - i;
  }
  return downbeats[0] > 0.05 ? 2 : 1;
}

const RULER = 18; // px: the bar-number strip at the top
const KEYS = 28; // px: the pitch labels at the left
const MIN_ZOOM = 10;
const MAX_ZOOM = 1600;

export class PianoRoll {
  constructor(canvas, scroller, track, { onSeek, onNote } = {}) {
    this.canvas = canvas;
    this.scroller = scroller;
    this.track = track;
    this.onSeek = onSeek || (() => {});
    this.onNote = onNote || (() => {});
    this.pxPerSecond = 80;
    this.playhead = 0;
    this.notes = [];
    this.stems = [];
    this.hidden = new Set();
    // The height in CSS pixels, read once: layout() rewrites the canvas's own height for the pixel ratio.
    this.cssHeight = Number(canvas.getAttribute("height")) || 360;
    scroller.addEventListener("scroll", () => this.draw());
    canvas.addEventListener("click", (e) => this.click(e));
    new ResizeObserver(() => this.layout()).observe(scroller);
  }

  // doc: notes.json; stems: every stem of the job (a stem with no notes still gets a colour and a toggle).
  load(doc, stems) {
    this.doc = doc;
    this.notes = doc.notes || [];
    this.stems = stems;
    this.colours = stemColours(stems);
    this.hidden.clear();
    const pitches = this.notes.map((n) => n.pitch);
    this.low = pitches.length ? Math.min(...pitches) - 2 : 48;
    this.high = pitches.length ? Math.max(...pitches) + 2 : 72;
    const ends = this.notes.map((n) => n.end).concat(doc.beats || []);
    this.duration = Math.max(1, ...ends) + 1;
    this.firstBar = firstBarNumber(doc);
    this.canvas.dataset.firstBar = String(this.firstBar);
    this.canvas.dataset.stems = stems.join(",");
    this.canvas.dataset.notes = String(this.notes.length);
    this.layout();
  }

  setHidden(stem, hidden) {
    if (hidden) this.hidden.add(stem);
    else this.hidden.delete(stem);
    this.draw();
  }

  zoom(factor) {
    // Keep the time at the middle of the view where it was.
    const middle = (this.scroller.scrollLeft + this.scroller.clientWidth / 2) / this.pxPerSecond;
    this.pxPerSecond = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.pxPerSecond * factor));
    this.layout();
    this.scroller.scrollLeft = middle * this.pxPerSecond - this.scroller.clientWidth / 2;
    this.draw();
  }

  setPlayhead(seconds) {
    this.playhead = seconds;
    // Follow the playhead once it leaves the view.
    const x = seconds * this.pxPerSecond;
    const { scrollLeft, clientWidth } = this.scroller;
    if (x < scrollLeft || x > scrollLeft + clientWidth - KEYS) this.scroller.scrollLeft = x - KEYS;
    this.draw();
  }

  layout() {
    if (!this.doc) return;
    this.track.style.width = `${Math.ceil(this.duration * this.pxPerSecond) + KEYS}px`;
    const ratio = window.devicePixelRatio || 1;
    const width = this.scroller.clientWidth;
    const height = this.cssHeight;
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    this.ratio = ratio;
    this.canvas.dataset.pxPerSecond = String(this.pxPerSecond);
    this.draw();
  }

  // Screen geometry: time t at x, pitch p's row from y to y + rowHeight.
  x(t) {
    return KEYS + t * this.pxPerSecond - this.scroller.scrollLeft;
  }

  rowHeight() {
    return (this.cssHeight - RULER) / (this.high - this.low + 1);
  }

  y(pitch) {
    return RULER + (this.high - pitch) * this.rowHeight();
  }

  visibleNotes() {
    return this.notes.filter((n) => !this.hidden.has(n.stem));
  }

  draw() {
    if (!this.doc) return;
    const ctx = this.canvas.getContext("2d");
    const width = this.canvas.width / this.ratio;
    const height = this.cssHeight;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    const row = this.rowHeight();

    // Black keys' rows shaded, as in a DAW, so pitches can be read off.
    for (let p = this.low; p <= this.high; p++) {
      if ([1, 3, 6, 8, 10].includes(p % 12)) {
        ctx.fillStyle = "#f1f1f4";
        ctx.fillRect(KEYS, this.y(p), width - KEYS, row);
      }
    }

    // Beats faint, bar lines strong, bar numbers in the ruler.
    const beats = this.doc.beats || [];
    const downbeats = this.doc.downbeats || [];
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#e0e0e6";
    for (const b of beats) this.vline(ctx, this.x(b), height);
    ctx.strokeStyle = "#9a9aa8";
    for (const d of downbeats) this.vline(ctx, this.x(d), height);

    // Notes: the stem's colour, more opaque when louder.
    let drawn = 0;
    const drawnStems = new Set();
    for (const n of this.visibleNotes()) {
      const x0 = this.x(n.start);
      const x1 = this.x(n.end);
      if (x1 < KEYS || x0 > width) continue;
      ctx.globalAlpha = 0.55 + 0.45 * Math.min(1, (n.velocity || 64) / 127);
      ctx.fillStyle = this.colours[n.stem] || "#000000";
      ctx.fillRect(Math.max(KEYS, x0), this.y(n.pitch) + 0.5, Math.max(2, x1 - Math.max(KEYS, x0)), Math.max(2, row - 1));
      drawn += 1;
      drawnStems.add(n.stem);
    }
    ctx.globalAlpha = 1;

    // Playhead.
    ctx.strokeStyle = "#d00000";
    ctx.lineWidth = 2;
    this.vline(ctx, this.x(this.playhead), height);

    // Pitch labels (every C) and the ruler's background, over anything scrolled under them.
    ctx.fillStyle = "#fafafa";
    ctx.fillRect(0, 0, KEYS, height);
    ctx.fillStyle = "rgba(250,250,250,0.85)";
    ctx.fillRect(KEYS, 0, width - KEYS, RULER);
    ctx.fillStyle = "#55556a";
    ctx.font = "11px sans-serif";
    // Bar 1 starts at 0 s whatever it holds (the pickup rule); tracked bar lines are numbered from there.
    if (this.firstBar > 1 && this.x(0) > KEYS - 1) ctx.fillText("1", this.x(0) + 3, 12);
    downbeats.forEach((d, i) => {
      const x = this.x(d);
      if (x > KEYS - 1 && x < width) ctx.fillText(String(this.firstBar + i), x + 3, 12);
    });
    ctx.fillStyle = "#333333";
    for (let p = this.low; p <= this.high; p++) {
      if (p % 12 === 0) ctx.fillText(`C${p / 12 - 1}`, 2, this.y(p) + Math.min(row, 12) - 1);
    }

    this.canvas.dataset.drawnNotes = String(drawn);
    this.canvas.dataset.drawnStems = [...drawnStems].sort().join(",");
  }

  vline(ctx, x, height) {
    ctx.beginPath();
    ctx.moveTo(Math.round(x) + 0.5, RULER);
    ctx.lineTo(Math.round(x) + 0.5, height);
    ctx.stroke();
  }

  noteAt(cssX, cssY) {
    const t = (cssX - KEYS + this.scroller.scrollLeft) / this.pxPerSecond;
    const pitch = this.high - Math.floor((cssY - RULER) / this.rowHeight());
    // Last drawn is on top.
    const hits = this.visibleNotes().filter((n) => n.pitch === pitch && n.start <= t && t <= n.end);
    return hits[hits.length - 1] || null;
  }

  // Where a note is on the page (for a test or a tooltip): the middle of its rectangle, in client pixels.
  notePosition(note) {
    const box = this.canvas.getBoundingClientRect();
    const x0 = Math.max(KEYS, this.x(note.start));
    const x1 = this.x(note.end);
    return { x: box.left + (x0 + x1) / 2, y: box.top + this.y(note.pitch) + this.rowHeight() / 2 };
  }

  click(event) {
    const box = this.canvas.getBoundingClientRect();
    const x = event.clientX - box.left;
    const y = event.clientY - box.top;
    if (x < KEYS) return;
    if (y < RULER) {
      this.onSeek(Math.max(0, (x - KEYS + this.scroller.scrollLeft) / this.pxPerSecond));
      return;
    }
    const note = this.noteAt(x, y);
    if (note) {
      this.canvas.dataset.lastNote = `${note.stem}:${note.pitch}`;
      this.onNote(note);
    }
  }
}
