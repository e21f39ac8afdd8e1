// The documented HTTP API, and nothing else: every call goes through /api/v1 (or the events WebSocket).
// Paths are relative to the page, so the service works behind a route prefix too.

const KEY_STORAGE = "stemscribe.apiKey";

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// Kept in sessionStorage: it survives a reload but not closing the tab, and is never sent anywhere but here.
export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function apiUrl(path) {
  return new URL(`api/v1/${path}`, document.baseURI).toString();
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { "X-API-Key": key, ...extra } : extra;
}

async function problem(response) {
  // Errors are application/problem+json; anything else (a proxy's HTML page) still gets a sentence.
  try {
    const body = await response.json();
    return new ApiError(response.status, body.code, body.detail || body.title);
  } catch {
    return new ApiError(response.status, "http_error", `The service answered ${response.status}.`);
  }
}

async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path), { ...options, headers: headers(options.headers) });
  } catch (err) {
    throw new ApiError(0, "unreachable", `The service is not reachable (${err.message}).`);
  }
  if (!response.ok) throw await problem(response);
  return response;
}

export async function submit(file, form) {
  const body = new FormData();
  body.append("file", file, file.name);
  for (const [name, value] of Object.entries(form)) body.append(name, value);
  // A retried click must not make a second job: the same key with the same upload answers with the first.
  const idempotency = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  const response = await call("transcribe", { method: "POST", body, headers: { "Idempotency-Key": idempotency } });
  return response.json();
}

export async function getJob(jobId) {
  return (await call(`jobs/${jobId}`)).json();
}

export async function listJobs(cursor) {
  const query = new URLSearchParams({ limit: "20" });
  if (cursor) query.set("cursor", cursor);
  return (await call(`jobs?${query}`)).json();
}

export async function cancelJob(jobId) {
  return (await call(`jobs/${jobId}/cancel`, { method: "POST" })).json();
}

// A result as a Blob. With a key, the header must be sent, which <a href> and <audio src> cannot do,
// so every result the page shows or offers is fetched here and handed over as a blob: URL.
export async function fetchResult(link) {
  let response;
  try {
    response = await fetch(link.url, { headers: headers() });
  } catch (err) {
    throw new ApiError(0, "unreachable", `Could not download ${link.name} (${err.message}).`);
  }
  if (!response.ok) throw await problem(response);
  return response.blob();
}

export async function fetchJson(link) {
  return JSON.parse(await (await fetchResult(link)).text());
}

// Follow a job live: WebSocket with a short-lived events token (a browser cannot set X-API-Key on a
// WebSocket). onState gets {status, stage, progress, error, source}. If the socket cannot be used (a
// proxy that does not pass WebSockets), the job is polled instead. Resolves with the final state.
export async function follow(jobId, onState) {
  const { token } = await (await call(`jobs/${jobId}/events-token`, { method: "POST" })).json();
  const wsUrl = new URL(`ws/jobs/${jobId}`, document.baseURI);
  wsUrl.protocol = wsUrl.protocol === "https:" ? "wss:" : "ws:";
  wsUrl.searchParams.set("token", token);
  const final = await new Promise((resolve) => {
    let last = null;
    const socket = new WebSocket(wsUrl);
    socket.onmessage = (message) => {
      last = JSON.parse(message.data);
      onState({ ...last, source: "websocket" });
      if (last.event === "final") resolve(last);
    };
    // Closed before the final state (or never opened): fall back to polling.
    socket.onclose = () => resolve(last && last.event === "final" ? last : null);
  });
  return final || poll(jobId, onState);
}

async function poll(jobId, onState) {
  for (;;) {
    let job = null;
    try {
      job = await getJob(jobId);
    } catch (err) {
      // A moment away (503, a dropped connection) is waited out; a refusal (401, 404, 410) is the answer.
      if (err.status !== 0 && err.status !== 503) throw err;
    }
    if (job) {
      onState({ ...job, source: "poll" });
      if (["succeeded", "failed", "canceled"].includes(job.status)) return job;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
