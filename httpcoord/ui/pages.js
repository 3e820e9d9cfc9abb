// The sessions page and the cluster page. The last cluster view is kept:
// when the node the page talks to is lost, it names the other members.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
const CLUSTER_REFRESH_MS = 2000;

function cell(row, content, header = false) {
  const td = document.createElement(header ? "th" : "td");
  if (header) td.scope = "row";
  td.append(content === undefined || content === null ? "—" : content);
  row.append(td);
  return td;
}

// A member's client URL comes from its configuration: link it only when it
// is plainly http(s), never as a script URL.
const WEB_URL = /^https?:\/\/[^\s]+$/;

export function webUrl(url) {
  return typeof url === "string" && WEB_URL.test(url) ? url.replace(/\/+$/, "") : null;
}

function link(href, text) {
  return Object.assign(document.createElement("a"), { href, textContent: text });
}

export class SessionsPage {
  constructor({ fail, announce }) {
    this.fail = fail;
    this.announce = announce;
    $("btn-sessions-reload").addEventListener("click", () => this.load());
  }

  async load() {
    let sessions;
    try {
      sessions = (await api.sessions()).json.sessions;
    } catch (err) {
      this.fail(err, "listing sessions");
      return;
    }
    const body = $("sessions-table").tBodies[0];
    body.replaceChildren();
    $("sessions-caption").textContent = `${sessions.length} open session${sessions.length === 1 ? "" : "s"}`;
    for (const s of sessions) {
      const row = body.insertRow();
      cell(row, s.id, true).className = "mono";
      cell(row, `${s.ttl_ms} ms`);
      const owned = cell(row, String(s.ephemeral_count));
      if (s.ephemeral_count > 0) {
        const show = Object.assign(document.createElement("button"), {
          type: "button",
          textContent: "show",
        });
        show.setAttribute("aria-label", `show the ephemeral nodes of session ${s.id}`);
        show.addEventListener("click", () => this.ephemerals(s.id, owned));
        owned.append(" ", show);
      }
    }
  }

  async ephemerals(id, into) {
    try {
      const { json } = await api.session(id);
      const list = document.createElement("ul");
      for (const path of json.ephemerals) {
        const li = document.createElement("li");
        li.append(link(`#/tree${path.split("/").map(encodeURIComponent).join("/")}`, path));
        list.append(li);
      }
      into.replaceChildren(String(json.ephemerals.length), list);
    } catch (err) {
      this.fail(err, `reading session ${id}`);
    }
  }
}

export class ClusterPage {
  constructor({ fail }) {
    this.fail = fail;
    this.timer = null;
    this.last = null; // the last GET /v1/cluster answer
  }

  /** The other members' client URLs from the last view. */
  otherMembers() {
    if (!this.last) return [];
    return this.last.members
      .filter((m) => m.id !== this.last.id && webUrl(m.client_url))
      .map((m) => ({ id: m.id, url: webUrl(m.client_url) }));
  }

  async fetch() {
    try {
      this.last = (await api.cluster()).json;
    } catch (err) {
      return err;
    }
    return null;
  }

  start() {
    this.stop();
    const tick = async () => {
      const err = await this.fetch();
      if (this.timer === null) return;
      if (err) this.fail(err, "reading the cluster");
      else this.render();
      this.timer = setTimeout(tick, CLUSTER_REFRESH_MS);
    };
    this.timer = setTimeout(tick, 0);
  }

  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  render() {
    const view = this.last;
    const leader = view.members.find((m) => m.id === view.leader);
    const leaderApplied = leader && leader.reachable ? leader.applied_index : null;
    $("cluster-summary").textContent =
      `Answered by node ${view.id}; leader ${view.leader || "unknown"}, term ${view.term}, ` +
      `commit index ${view.commit_index}, applied index ${view.applied_index}, zxid ${view.zxid}.`;
    const body = $("cluster-table").tBodies[0];
    body.replaceChildren();
    for (const m of view.members) {
      const row = body.insertRow();
      if (m.id === view.leader) row.className = "leader";
      cell(row, String(m.id), true);
      const url = webUrl(m.client_url);
      cell(row, url ? link(`${url}/ui/`, m.client_url) : m.client_url);
      cell(row, m.voter ? "voter" : "learner");
      cell(row, m.reachable ? "yes" : "no").className = m.reachable ? "ok" : "bad";
      cell(row, m.role);
      cell(row, m.leader === undefined ? null : String(m.leader || "none"));
      cell(row, m.term === undefined ? null : String(m.term));
      cell(row, m.commit_index === undefined ? null : String(m.commit_index));
      cell(row, m.applied_index === undefined ? null : String(m.applied_index));
      const lag =
        leaderApplied !== null && m.applied_index !== undefined ? leaderApplied - m.applied_index : null;
      cell(row, lag === null ? null : String(lag));
      cell(row, m.zxid === undefined ? null : String(m.zxid));
      cell(row, m.digest || null).className = "mono";
    }
  }
}
