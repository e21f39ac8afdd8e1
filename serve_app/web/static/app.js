// The page: pick or drop files, upload them with the chosen options, follow each job live, then show the
// result (piano roll, players, downloads); the key's jobs below.
import * as api from "./api.js";
import { Players, playNote } from "./players.js";
import { PianoRoll } from "./roll.js";

const $ = (selector) => document.querySelector(selector);
const FINAL = new Set(["succeeded", "failed", "canceled"]);

const state = {
  picked: [],
  localFiles: new Map(), // job id -> the File this page uploaded: the original's player, without a download
  cursor: null,
  shown: null, // the job in the result view
  lastTone: null, // the clicked note last heard
};

const roll = new PianoRoll($("#roll"), $("#roll-scroll"), $("#roll-track"), {
  onSeek: (t) => players.seek(t),
  onNote: (note) => {
    const frequency = playNote(note.pitch, note.velocity, Math.min(1, Math.max(0.15, note.end - note.start)));
    state.lastTone = { stem: note.stem, pitch: note.pitch, frequency };
  },
});
const players = new Players($("#players"), $("#play-all"), $("#clock"), { onTime: (t) => roll.setPlayhead(t) });

// For tests and the browser console: what is on screen, in numbers.
window.stemscribe = { roll, players, state };

function message(element, err) {
  if (!err) {
    element.textContent = "";
    return;
  }
  element.textContent =
    err.status === 401 ? "The service wants a valid API key: enter it at the top of the page." : err.message;
}

// --- the key --------------------------------------------------------------------------------------------

function showKeyState() {
  $("#key-state").textContent = api.getKey() ? "key set for this tab" : "no key";
}

$("#api-key").value = api.getKey();
showKeyState();
$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  api.setKey($("#api-key").value.trim());
  showKeyState();
  refreshJobs();
});

// --- picking files --------------------------------------------------------------------------------------

function pick(files) {
  state.picked = [...files];
  $("#picked").replaceChildren(
    ...state.picked.map((f) => {
      const li = document.createElement("li");
      li.textContent = `${f.name} (${(f.size / 1e6).toFixed(1)} MB)`;
      return li;
    }),
  );
  $("#submit").disabled = state.picked.length === 0;
}

const drop = $("#drop-zone");
$("#file-input").addEventListener("change", (e) => pick(e.target.files));
drop.addEventListener("click", (e) => {
  if (e.target === drop || e.target.tagName === "P") $("#file-input").click();
});
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") $("#file-input").click();
});
for (const kind of ["dragenter", "dragover"]) {
  drop.addEventListener(kind, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  pick(e.dataTransfer.files);
});

// --- uploading and following ------------------------------------------------------------------------------

$("#upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  message($("#upload-error"), null);
  const form = { separation: $("#separation").value, quantize_grid: $("#quantize-grid").value };
  const files = state.picked;
  pick([]);
  $("#file-input").value = "";
  // Every file at once: the service queues what it cannot run yet.
  await Promise.all(files.map((file) => transcribe(file, form)));
});

async function transcribe(file, form) {
  const row = progressRow(file.name);
  let accepted;
  try {
    accepted = await api.submit(file, form);
  } catch (err) {
    row.fail(`${file.name}: ${err.message}`);
    message($("#upload-error"), err);
    return;
  }
  state.localFiles.set(accepted.job_id, file);
  row.job(accepted.job_id);
  refreshJobs();
  try {
    const final = await api.follow(accepted.job_id, (s) => row.update(s));
    row.update(final);
    refreshJobs();
    if (final.status === "succeeded") await showJob(accepted.job_id);
  } catch (err) {
    row.fail(err.message);
  }
}

function progressRow(name) {
  const li = document.createElement("li");
  li.className = "job-progress";
  li.innerHTML = `<span class="name"></span> <progress max="100" value="0"></progress>
    <span class="pct">0%</span> <span class="stage muted">uploading</span>
    <button type="button" class="small cancel" hidden>Cancel</button>
    <button type="button" class="small open" hidden>Show</button> <span class="error"></span>`;
  li.querySelector(".name").textContent = name;
  li.dataset.progress = "0";
  li.dataset.status = "uploading";
  $("#progress").prepend(li);
  const cancel = li.querySelector(".cancel");
  const open = li.querySelector(".open");
  return {
    job(jobId) {
      li.dataset.jobId = jobId;
      li.querySelector(".stage").textContent = "queued";
      cancel.hidden = false;
      cancel.onclick = () => api.cancelJob(jobId).catch((err) => this.fail(err.message));
      open.onclick = () => showJob(jobId);
    },
    update(s) {
      li.dataset.progress = String(Math.round(s.progress));
      li.dataset.status = s.status;
      if (s.source) li.dataset.source = s.source;
      li.querySelector("progress").value = s.progress;
      li.querySelector(".pct").textContent = `${Math.round(s.progress)}%`;
      li.querySelector(".stage").textContent = s.status === "running" ? s.stage : s.status;
      if (FINAL.has(s.status)) {
        cancel.hidden = true;
        open.hidden = s.status !== "succeeded";
        if (s.error) li.querySelector(".error").textContent = s.error;
      }
    },
    fail(text) {
      li.dataset.status = "error";
      cancel.hidden = true;
      li.querySelector("progress").hidden = true;
      li.querySelector(".pct").hidden = true;
      li.querySelector(".stage").textContent = li.dataset.jobId ? "not followed" : "refused";
      li.querySelector(".error").textContent = text;
    },
  };
}

// --- the job list -------------------------------------------------------------------------------------------

async function refreshJobs(more = false) {
  let page;
  try {
    page = await api.listJobs(more ? state.cursor : null);
  } catch (err) {
    message($("#jobs-error"), err);
    return;
  }
  message($("#jobs-error"), null);
  const body = $("#jobs tbody");
  if (!more) body.replaceChildren();
  for (const job of page.jobs) body.append(jobRow(job));
  state.cursor = page.next_cursor;
  $("#more-jobs").hidden = !page.next_cursor;
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = job.job_id;
  tr.dataset.status = job.status;
  const cells = [
    job.upload_name || job.job_id,
    job.error ? `${job.status}: ${job.error}` : job.status,
    `${Math.round(job.progress)}%`,
    job.options?.separation || "",
    new Date(job.created_at).toLocaleString(),
  ];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  const td = document.createElement("td");
  if (job.status === "succeeded" && job.results.length) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "small";
    b.textContent = "Show";
    b.onclick = () => showJob(job.job_id);
    td.append(b);
  }
  tr.append(td);
  return tr;
}

$("#refresh-jobs").addEventListener("click", () => refreshJobs());
$("#more-jobs").addEventListener("click", () => refreshJobs(true));

// --- the result view ------------------------------------------------------------------------------------------

async function showJob(jobId) {
  const section = $("#result");
  let job;
  let doc;
  try {
    job = await api.getJob(jobId);
    const notesLink = job.results.find((r) => r.name === "notes.json");
    if (!notesLink) throw new Error(`Job ${jobId} has no notes.json (is it finished?).`);
    doc = await api.fetchJson(notesLink);
  } catch (err) {
    message($("#upload-error"), err);
    return;
  }
  state.shown = job;
  section.hidden = false;
  section.dataset.jobId = jobId;
  $("#result-title").textContent = `Result: ${job.upload_name || jobId}`;
  const a = job.analysis || {};
  $("#analysis").textContent = [
    a.tempo_bpm && `${a.tempo_bpm} BPM (${a.tempo_source})`, a.time_signature, a.key,
    `${doc.notes.length} notes`,
  ].filter(Boolean).join(" · ");

  // Every separated stem, whether or not it has notes, then any stem that only notes.json names.
  const stemLinks = job.results.filter((r) => /^stems\/.+\.wav$/.test(r.name));
  const stems = stemLinks.map((r) => r.name.slice("stems/".length, -".wav".length));
  for (const n of doc.notes) if (!stems.includes(n.stem)) stems.push(n.stem);
  roll.load(doc, stems);
  stemToggles(stems);
  zoomLabel();

  players.clear();
  const original = state.localFiles.get(jobId);
  if (original) players.add("original", original, "#777777", false);
  // With a key the audio has to come through fetch (an <audio> cannot send the header); without one
  // the element streams the URL itself, and can start before the whole file is here.
  const sources = await Promise.all(
    stemLinks.map((link) => (api.getKey() ? api.fetchResult(link) : Promise.resolve(link.url))),
  ).catch((err) => {
    message($("#upload-error"), err);
    return [];
  });
  sources.forEach((src, i) => players.add(stems[i], src, roll.colours[stems[i]], true));
  section.dataset.players = String(players.rows.length);
  downloads(job);
  section.scrollIntoView({ behavior: "smooth" });
}

function stemToggles(stems) {
  const box = $("#stem-toggles");
  box.replaceChildren(
    ...stems.map((stem) => {
      const label = document.createElement("label");
      label.className = "stem-toggle";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.checked = true;
      input.dataset.stem = stem;
      input.addEventListener("change", () => roll.setHidden(stem, !input.checked));
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = roll.colours[stem];
      label.append(input, swatch, stem);
      return label;
    }),
  );
}

function zoomLabel() {
  $("#zoom-level").textContent = `${Math.round(roll.pxPerSecond)} px/s`;
}

$("#zoom-in").addEventListener("click", () => {
  roll.zoom(1.5);
  zoomLabel();
});
$("#zoom-out").addEventListener("click", () => {
  roll.zoom(1 / 1.5);
  zoomLabel();
});

function downloads(job) {
  const list = $("#downloads");
  list.replaceChildren(
    ...job.results.map((link) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.textContent = link.name;
      a.dataset.result = link.name;
      a.href = link.url;
      a.addEventListener("click", (e) => {
        // Without a key the link itself downloads (the service sends it as an attachment).
        if (!api.getKey()) return;
        e.preventDefault();
        saveWithKey(link, a);
      });
      li.append(a);
      return li;
    }),
  );
}

async function saveWithKey(link, anchor) {
  try {
    const blob = await api.fetchResult(link);
    const url = URL.createObjectURL(blob);
    const save = document.createElement("a");
    save.href = url;
    save.download = link.name.replaceAll("/", "-");
    document.body.append(save);
    save.click();
    save.remove();
    // The download has its own copy once it started.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    anchor.title = err.message;
    message($("#upload-error"), err);
  }
}

refreshJobs();
