// The one watch stream of the page: an EventSource on /v1/watches for the
// open node and every expanded node (non-recursive: each one's data and
// child list), from its current state (initial=true). A new set of paths
// opens a new stream first and closes the old one once the new one is open,
// so no change falls between the two. A dropped stream is reopened by the
// browser itself with Last-Event-ID, which resumes after the last event.

import { heard, request } from "./api.js";

const EVENT_TYPES = ["initial", "bookmark", "created", "deleted", "data_changed", "children_changed"];

export class Live {
  /** onEvent(event) for each watch event; onTrouble(closed) when the stream
   * fails (closed: the browser gave up on it and it must be reopened). */
  constructor({ onEvent, onTrouble }) {
    this.onEvent = onEvent;
    this.onTrouble = onTrouble;
    this.current = null; // {es, key}
    this.next = null; // a stream opening to replace current
    this.key = "";
  }

  /** Follow exactly `paths` (unchanged set: nothing happens). */
  setPaths(paths) {
    const key = [...new Set(paths)].sort().join("\n");
    if (key === this.key && (this.next || (this.current && this.current.es.readyState !== 2))) return;
    this.key = key;
    this.open(key);
  }

  /** Start over from the current state (after the node came back). */
  reopen() {
    this.open(this.key);
  }

  get state() {
    const stream = this.next || this.current;
    return stream ? ["connecting", "open", "closed"][stream.es.readyState] : "none";
  }

  open(key) {
    if (this.next) this.next.es.close();
    const params = new URLSearchParams();
    for (const path of key.split("\n")) params.append("path", path);
    params.append("initial", "true");
    params.append("data", "true");
    const es = new EventSource(`/v1/watches?${params}`);
    const stream = { es, key };
    this.next = stream;
    const deliver = (e) => {
      heard(null);
      if (stream !== this.current && stream !== this.next) return;
      this.onEvent(JSON.parse(e.data));
    };
    for (const type of EVENT_TYPES) es.addEventListener(type, deliver);
    es.addEventListener("open", () => {
      heard(null);
      if (this.next === stream) {
        if (this.current) this.current.es.close();
        this.current = stream;
        this.next = null;
      }
    });
    es.addEventListener("error", () => {
      if (stream !== this.current && stream !== this.next) return;
      this.onTrouble(es.readyState === EventSource.CLOSED);
    });
  }

  /** Why the server refuses the stream, if it does: the same watch asked
   * once as a long-poll that answers at once, whose error is problem+json
   * (an EventSource does not show the answer it gave up on). */
  async diagnose() {
    try {
      await request("GET", "/v1/watches", {
        query: { path: this.key.split("\n"), initial: true, timeout: 0 },
      });
    } catch (err) {
      return err;
    }
    return null;
  }

  close() {
    for (const stream of [this.current, this.next]) if (stream) stream.es.close();
    this.current = this.next = null;
    this.key = "";
  }
}
