// Fetch helpers for the same origin's API: problem+json errors become
// ApiError, and every answer tells which node answered and which one leads.

/** An error answer of the API (problem+json), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, detail, problem) {
    super(`${code}: ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.problem = problem || {};
  }
}

/** Who answered, and whether the node can be reached: read by the header
 * bar and the lost-node banner. Listeners get "node" and "reach" events. */
export const link = new EventTarget();
link.nodeId = null;
link.leaderId = null;
link.lastHeardMs = null;

const REQUEST_TIMEOUT_MS = 8000;

/** The API path of a znode: each segment percent-encoded. */
export function nodeUrl(base, path) {
  const segments = path.split("/").filter((s) => s !== "").map(encodeURIComponent);
  return `${base}/${segments.join("/")}`;
}

/** Heard from the node: remember when, and who it is. */
export function heard(headers) {
  link.lastHeardMs = Date.now();
  if (headers) {
    const node = headers.get("X-Coord-Node");
    const leader = headers.get("X-Coord-Leader");
    if (node !== link.nodeId || leader !== link.leaderId) {
      link.nodeId = node;
      link.leaderId = leader;
      link.dispatchEvent(new Event("node"));
    }
  }
  link.dispatchEvent(new CustomEvent("reach", { detail: true }));
}

/** Could not reach the node at all (no HTTP answer). */
export function unreachable() {
  link.dispatchEvent(new CustomEvent("reach", { detail: false }));
}

/**
 * One request. `query` is an object (undefined values left out, arrays
 * repeated); `body` a string. Resolves to {status, headers, json}; rejects
 * with ApiError for every error answer and for a network failure.
 */
export async function request(method, path, { query, body, signal, quiet } = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null) params.append(key, String(v));
    }
  }
  const qs = params.toString();
  const url = qs ? `${path}?${qs}` : path;
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), REQUEST_TIMEOUT_MS);
  if (signal) signal.addEventListener("abort", () => timeout.abort());
  let response;
  try {
    response = await fetch(url, {
      method,
      body,
      signal: timeout.signal,
      headers: body === undefined ? {} : { "Content-Type": "application/octet-stream" },
      cache: "no-store",
    });
  } catch (err) {
    if (!quiet) unreachable();
    throw new ApiError(0, "Unreachable", `no answer from ${location.origin} (${err.message})`);
  } finally {
    clearTimeout(timer);
  }
  heard(response.headers);
  const type = response.headers.get("Content-Type") || "";
  const json = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const problem = json || {};
    throw new ApiError(
      response.status,
      problem.code || `HTTP${response.status}`,
      problem.detail || response.statusText,
      problem,
    );
  }
  return { status: response.status, headers: response.headers, json };
}

/** Shorthands for the routes the UI uses. */
export const api = {
  getNode: (path, query = {}) => request("GET", nodeUrl("/v1/nodes", path), { query }),
  children: (path, after) =>
    request("GET", nodeUrl("/v1/nodes", path), { query: { children: true, after } }),
  create: (path, data, flags) =>
    request("POST", nodeUrl("/v1/nodes", path), { query: flags, body: data }),
  setData: (path, data, version) =>
    request("PUT", nodeUrl("/v1/nodes", path), { query: { version }, body: data }),
  remove: (path, version, recursive) =>
    request("DELETE", nodeUrl("/v1/nodes", path), {
      query: { version, recursive: recursive ? true : undefined },
    }),
  sessions: () => request("GET", "/v1/sessions"),
  session: (id) => request("GET", `/v1/sessions/${encodeURIComponent(id)}`),
  cluster: () => request("GET", "/v1/cluster"),
  health: () => request("GET", "/health", { quiet: true }),
};
