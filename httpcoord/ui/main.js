// The page: hash routes (#/tree/<path>, #/sessions, #/cluster), the header
// bar (which node answers, which leads), the status line, and what happens
// when the node stops answering.

import { api, link } from "./api.js";
import { Live } from "./live.js";
import { NodeView } from "./node.js";
import { ClusterPage, SessionsPage } from "./pages.js";
import { parentOf, Tree } from "./tree.js";

const $ = (id) => document.getElementById(id);
const PROBE_MS = 2000;
const MEMBERS_REFRESH_MS = 15000;

function announce(text) {
  const status = $("status");
  status.classList.remove("error");
  status.textContent = text;
}

function fail(err, what) {
  const status = $("status");
  status.classList.add("error");
  status.textContent = `Error ${what}: ${err.code}: ${err.detail}`;
}

export function hashFor(path) {
  return `#/tree${path === "/" ? "" : path.split("/").map(encodeURIComponent).join("/")}`;
}

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/tree";
  const [, page = "tree", ...rest] = hash.split("/");
  if (page !== "tree") return { page, path: null };
  let path = "/";
  try {
    path = `/${rest.filter((s) => s !== "").map(decodeURIComponent).join("/")}`;
  } catch {
    path = "/";
  }
  return { page: "tree", path };
}

const navigate = (path) => {
  location.hash = hashFor(path);
};

const tree = new Tree($("tree"), {
  onSelect: navigate,
  onWatchChange: () => follow(),
  onError: fail,
});
const nodeView = new NodeView({
  announce,
  fail,
  navigate,
  created: (path) => tree.expand(parentOf(path)),
});
const sessionsPage = new SessionsPage({ fail, announce });
const clusterPage = new ClusterPage({ fail });
const live = new Live({ onEvent: applyEvent, onTrouble: () => probe() });

let page = null;

function follow() {
  live.setPaths([tree.selected, ...tree.expandedPaths()]);
}

function applyEvent(event) {
  nodeView.apply(event);
  const listing = tree.listings.get(event.path);
  if (event.type === "deleted") {
    tree.forget(event.path);
  } else if (event.type === "children_changed" && tree.expanded.has(event.path)) {
    tree.relist(event.path);
  } else if (event.type === "initial" && listing && listing.cversion !== event.stat.cversion) {
    // The list was read before this stream started: read it again at the
    // state the stream starts from.
    tree.relist(event.path);
  }
}

async function route() {
  const { page: next, path } = parseHash();
  const known = ["tree", "sessions", "cluster"].includes(next) ? next : "tree";
  for (const name of ["tree", "sessions", "cluster"]) {
    $(`page-${name}`).hidden = name !== known;
    const a = document.querySelector(`a[data-page="${name}"]`);
    if (name === known) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (known !== "cluster") clusterPage.stop();
  page = known;
  if (known === "tree") {
    document.title = `${path} · httpcoord`;
    await tree.reveal(path);
    follow();
    await nodeView.show(path);
  } else if (known === "sessions") {
    document.title = "Sessions · httpcoord";
    await sessionsPage.load();
  } else {
    document.title = "Cluster · httpcoord";
    clusterPage.start();
  }
}

// The header bar: who answers, and the leader it knows.
function showWho() {
  const who = $("who");
  const node = link.nodeId ? `node ${link.nodeId}` : "a node";
  const leader = link.leaderId ? `leader: node ${link.leaderId}` : "no leader known";
  who.textContent = `Talking to ${node} at ${location.host} · ${leader}`;
}
link.addEventListener("node", showWho);

// A lost node: say so, name the other members, keep probing, and recover
// by itself when it answers again.
let lost = false;
let probeTimer = null;

function showLost() {
  const banner = $("lost");
  const heardAt = link.lastHeardMs ? new Date(link.lastHeardMs).toLocaleTimeString() : "never";
  banner.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = `Lost node ${link.nodeId || "?"} at ${location.origin}.`;
  banner.append(title, ` Last heard from at ${heardAt}; retrying every ${PROBE_MS / 1000} s.`);
  const others = clusterPage.otherMembers();
  if (others.length) {
    const p = document.createElement("p");
    p.append("Other members: ");
    others.forEach((m, i) => {
      const a = Object.assign(document.createElement("a"), {
        href: `${m.url}/ui/${location.hash}`,
        textContent: `node ${m.id} (${m.url})`,
      });
      a.className = "member";
      p.append(i ? ", " : "", a);
    });
    banner.append(p);
  }
  banner.hidden = false;
  $("who").textContent = `Lost node ${link.nodeId || "?"} at ${location.host}`;
}

async function probe() {
  if (probeTimer !== null) return;
  try {
    await api.health();
  } catch {
    lost = true;
    showLost();
    probeTimer = setTimeout(() => {
      probeTimer = null;
      probe();
    }, PROBE_MS);
    return;
  }
  if (lost) recover();
  else if (live.state === "closed") restartStream();
}

// The node answers but the browser gave up on the stream (an error answer):
// say why, and try again after a pause rather than in a tight loop.
let restartTimer = null;

async function restartStream() {
  if (restartTimer !== null) return;
  const err = await live.diagnose();
  if (err) fail(err, "following changes (retrying)");
  restartTimer = setTimeout(() => {
    restartTimer = null;
    live.reopen();
    refreshShown();
  }, PROBE_MS);
}

function recover() {
  lost = false;
  $("lost").hidden = true;
  showWho();
  announce(`Node ${link.nodeId} at ${location.origin} answers again`);
  // An EventSource still retrying resumes by itself with Last-Event-ID;
  // one the browser gave up on starts over from the current state.
  if (live.state === "closed") live.reopen();
  refreshShown();
}

function refreshShown() {
  if (page === "tree") {
    for (const path of tree.expandedPaths()) tree.relist(path);
    nodeView.load();
  } else if (page === "sessions") {
    sessionsPage.load();
  }
}

link.addEventListener("reach", (e) => {
  if (!e.detail) probe();
  else if (lost && probeTimer === null) recover();
});

// The member list for the banner, kept fresh while the node answers.
async function refreshMembers() {
  if (!lost && page !== "cluster") await clusterPage.fetch();
  setTimeout(refreshMembers, MEMBERS_REFRESH_MS);
}

window.addEventListener("hashchange", route);
showWho();
await tree.expand("/");
await route();
refreshMembers();
