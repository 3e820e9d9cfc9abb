// The open znode: its data and stat in words, and the forms that change it
// (edit with a version check, create a child, delete).

import { api } from "./api.js";
import { showData } from "./format.js";
import { joinPath, parentOf } from "./tree.js";

const $ = (id) => document.getElementById(id);

function when(ms) {
  const t = document.createElement("time");
  const date = new Date(ms);
  t.dateTime = date.toISOString();
  t.textContent = `${date.toLocaleString()} (${ms} ms)`;
  return t;
}

/** Ask in a modal dialog; resolves true when the user confirms. */
export function confirmDialog(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

export class NodeView {
  /** Callbacks: announce(text), fail(err, what), navigate(path), created(path). */
  constructor({ announce, fail, navigate, created }) {
    this.announce = announce;
    this.fail = fail;
    this.navigate = navigate;
    this.created = created;
    this.path = "/";
    this.node = null; // {data, encoding, stat} or null when missing
    this.editing = null; // {baseVersion} while the edit form is open
    this.binaryAs = "hex";
    this.loadSeq = 0;
    // The zxid the shown state is at: an older event (from a stream being
    // replaced) must not take the view back in time.
    this.seenZxid = 0;
    this.wire();
  }

  wire() {
    $("btn-edit").addEventListener("click", () => this.openEdit());
    $("btn-cancel-edit").addEventListener("click", () => this.closeEdit());
    $("edit-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.save(this.editing.baseVersion);
    });
    $("btn-conflict-reload").addEventListener("click", () => {
      this.closeEdit();
      this.load();
    });
    $("btn-conflict-overwrite").addEventListener("click", () => this.save(this.conflictVersion));
    $("btn-create").addEventListener("click", () => this.openCreate());
    $("btn-cancel-create").addEventListener("click", () => this.closeCreate());
    $("create-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.create();
    });
    $("btn-delete").addEventListener("click", () => this.remove());
    $("btn-reload").addEventListener("click", () => this.load());
    for (const radio of document.querySelectorAll('input[name="binary-as"]')) {
      radio.addEventListener("change", () => {
        this.binaryAs = radio.value;
        this.render();
      });
    }
  }

  /** Show `path` (a new selection closes the forms of the previous one). */
  async show(path) {
    if (path !== this.path) {
      this.closeEdit();
      this.closeCreate();
      this.path = path;
      this.seenZxid = 0;
    }
    await this.load();
  }

  async load() {
    const seq = ++this.loadSeq;
    const path = this.path;
    try {
      const { json, headers } = await api.getNode(path);
      if (seq === this.loadSeq) {
        this.node = json;
        this.seenZxid = Number(headers.get("X-Coord-Zxid")) || 0;
      }
    } catch (err) {
      if (seq !== this.loadSeq) return;
      if (err.code === "NoNode") this.node = null;
      else {
        this.fail(err, `reading ${path}`);
        return;
      }
    }
    if (seq === this.loadSeq) this.render();
  }

  /** A watch event for the open node (initial, created, deleted,
   * data_changed, children_changed); the stream carries data (data=true). */
  apply(event) {
    if (event.path !== this.path || event.zxid < this.seenZxid) return;
    this.seenZxid = event.zxid;
    if (event.type === "deleted") {
      this.node = null;
      this.announce(`${event.path} was deleted`);
    } else if (event.type === "created" || event.type === "initial" || event.type === "data_changed") {
      this.node = { path: event.path, data: event.data, encoding: event.encoding, stat: event.stat };
      if (event.type !== "initial") this.announce(`${event.path} ${event.type.replace("_", " ")} (zxid ${event.zxid})`);
    } else if (event.type === "children_changed" && this.node) {
      this.node.stat = event.stat;
    }
    this.loadSeq++; // a read in flight is older than this event
    this.render();
  }

  render() {
    const node = this.node;
    $("node-title").textContent = this.path;
    $("node-missing").hidden = node !== null;
    $("node-missing").textContent = node === null ? `${this.path} does not exist (any more).` : "";
    for (const id of ["btn-edit", "btn-create", "btn-delete"]) $(id).disabled = node === null;
    $("btn-edit").disabled = node === null || node.encoding === "base64";
    $("btn-delete").disabled = node === null || this.path === "/";
    const changed = $("node-changed");
    if (this.editing && node && node.stat.version !== this.editing.baseVersion) {
      changed.hidden = false;
      changed.textContent =
        `Changed by another client while you edit: now at version ${node.stat.version}, ` +
        `your edit is based on version ${this.editing.baseVersion}.`;
    } else {
      changed.hidden = true;
    }
    const pre = $("node-data");
    const stat = $("node-stat");
    if (node === null) {
      pre.replaceChildren();
      stat.replaceChildren();
      $("data-kind").textContent = "";
      $("binary-as").hidden = true;
      return;
    }
    const kind = showData(pre, node.data, node.encoding, this.binaryAs);
    $("data-kind").textContent = `(${kind === "hex" || kind === "base64" ? `binary, ${kind}` : kind})`;
    $("binary-as").hidden = node.encoding !== "base64";
    this.renderStat(stat, node.stat);
  }

  renderStat(dl, s) {
    const owner = s.ephemeral_owner
      ? Object.assign(document.createElement("a"), {
          href: "#/sessions",
          textContent: `ephemeral, session ${s.ephemeral_owner}`,
        })
      : "persistent (no owner)";
    const rows = [
      ["Created at", when(s.ctime)],
      ["Modified at", when(s.mtime)],
      ["Created by zxid", String(s.czxid)],
      ["Modified by zxid", String(s.mzxid)],
      ["Children changed by zxid", String(s.pzxid)],
      ["Version", String(s.version)],
      ["Children version", String(s.cversion)],
      ["Ephemeral owner", owner],
      ["Data length", `${s.data_length} byte${s.data_length === 1 ? "" : "s"}`],
      ["Number of children", String(s.num_children)],
    ];
    dl.replaceChildren();
    for (const [term, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.append(value);
      dl.append(dt, dd);
    }
  }

  openEdit() {
    if (!this.node) return;
    this.closeCreate();
    this.editing = { baseVersion: this.node.stat.version };
    $("edit-version").textContent = String(this.editing.baseVersion);
    $("edit-data").value = this.node.data;
    $("conflict").hidden = true;
    $("edit-form").hidden = false;
    $("edit-data").focus();
    this.render();
  }

  closeEdit() {
    this.editing = null;
    $("edit-form").hidden = true;
    $("conflict").hidden = true;
    $("node-changed").hidden = true;
  }

  /** PUT ?version=N: never a blind overwrite. A 409 BadVersion shows the
   * node as it now is, and the user chooses to reload or overwrite it. */
  async save(version) {
    const path = this.path;
    const text = $("edit-data").value;
    try {
      const { json } = await api.setData(path, text, version);
      this.closeEdit();
      this.node = { path, data: text, encoding: "utf-8", stat: json.stat };
      this.seenZxid = Math.max(this.seenZxid, json.zxid);
      this.loadSeq++;
      this.render();
      this.announce(`Saved ${path}: version ${json.stat.version} (zxid ${json.zxid})`);
    } catch (err) {
      if (err.code !== "BadVersion") {
        this.fail(err, `saving ${path}`);
        return;
      }
      await this.showConflict(path, version);
    }
  }

  async showConflict(path, triedVersion) {
    let current;
    try {
      current = (await api.getNode(path)).json;
    } catch (err) {
      this.fail(err, `reading ${path} after a conflict`);
      return;
    }
    this.conflictVersion = current.stat.version;
    $("conflict-text").textContent =
      `${path} changed meanwhile: you edited version ${triedVersion}, it is now at version ` +
      `${current.stat.version}. Your edit is kept below; nothing was overwritten.`;
    showData($("conflict-data"), current.data, current.encoding, this.binaryAs);
    $("btn-conflict-overwrite").textContent = `Overwrite version ${current.stat.version} with my edit`;
    $("conflict").hidden = false;
    this.announce(`Conflict: ${path} is now at version ${current.stat.version}; not saved`);
    $("conflict-title").focus();
  }

  openCreate() {
    this.closeEdit();
    $("create-parent").textContent = this.path;
    $("create-form").hidden = false;
    $("create-name").focus();
  }

  closeCreate() {
    $("create-form").hidden = true;
    $("create-form").reset();
  }

  async create() {
    const name = $("create-name").value.trim();
    if (name === "" || name.includes("/")) {
      this.fail({ code: "BadArguments", detail: "a child's name is one non-empty path segment" }, "creating");
      $("create-name").focus();
      return;
    }
    const flags = {};
    if ($("create-kind").value === "container") flags.container = true;
    if ($("create-sequential").checked) flags.sequential = true;
    const path = joinPath(this.path, name);
    try {
      const { json } = await api.create(path, $("create-data").value, flags);
      this.closeCreate();
      this.announce(`Created ${json.path} (zxid ${json.zxid})`);
      this.created(json.path);
    } catch (err) {
      this.fail(err, `creating ${path}`);
    }
  }

  /** DELETE ?version=N; with children only after a confirmation that says
   * how many, then recursive=true. */
  async remove() {
    const node = this.node;
    if (!node || this.path === "/") return;
    const path = this.path;
    const count = node.stat.num_children;
    const text =
      count > 0
        ? `Delete ${path} and its ${count} ${count === 1 ? "child" : "children"} (and everything below them)?`
        : `Delete ${path}?`;
    const ok = await confirmDialog(text, count > 0 ? "Delete them all" : "Delete");
    if (!ok) return;
    try {
      const { json } = await api.remove(path, node.stat.version, count > 0);
      this.announce(`Deleted ${path} (zxid ${json.zxid})`);
      this.navigate(parentOf(path));
    } catch (err) {
      this.fail(err, `deleting ${path}`);
      this.load();
    }
  }
}
