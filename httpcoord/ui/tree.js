// The znode tree: a WAI-ARIA tree (role=tree/treeitem, aria-expanded, one
// tab stop with a roving tabindex, arrow keys), children loaded a page at a
// time with a "more" button for the next page.

import { api } from "./api.js";

export function parentOf(path) {
  if (path === "/") return null;
  const cut = path.lastIndexOf("/");
  return cut === 0 ? "/" : path.slice(0, cut);
}

export function joinPath(parent, name) {
  return parent === "/" ? `/${name}` : `${parent}/${name}`;
}

function nameOf(path) {
  return path === "/" ? "/" : path.slice(path.lastIndexOf("/") + 1);
}

export class Tree {
  /**
   * `root`: the <ul role=tree>. Callbacks: onSelect(path) when the user
   * opens a node, onWatchChange() when the set of expanded nodes changes,
   * onError(err, what) for a failed listing.
   */
  constructor(root, { onSelect, onWatchChange, onError }) {
    this.root = root;
    this.onSelect = onSelect;
    this.onWatchChange = onWatchChange;
    this.onError = onError;
    // path -> {children: string[] | null, next: string | null}
    this.listings = new Map();
    this.expanded = new Set();
    this.selected = "/";
    this.focused = "/";
    root.addEventListener("keydown", (e) => this.onKey(e));
    root.addEventListener("click", (e) => this.onClick(e));
    this.render();
  }

  /** The nodes whose child lists are shown (to watch them). */
  expandedPaths() {
    return [...this.expanded].filter((p) => this.isVisible(p));
  }

  isVisible(path) {
    for (let p = parentOf(path); p !== null; p = parentOf(p)) {
      if (!this.expanded.has(p)) return false;
    }
    return true;
  }

  async expand(path) {
    if (this.expanded.has(path)) return;
    this.expanded.add(path);
    if (!this.listings.has(path)) await this.relist(path, false);
    this.render();
    this.onWatchChange();
  }

  collapse(path) {
    if (!this.expanded.delete(path)) return;
    if (this.focused !== path && this.focused.startsWith(path === "/" ? "/" : `${path}/`)) {
      this.focused = path;
    }
    this.render();
    this.onWatchChange();
  }

  /** Open every ancestor of `path`, so that a shared URL shows where it is. */
  async reveal(path) {
    const chain = [];
    for (let p = parentOf(path); p !== null; p = parentOf(p)) chain.unshift(p);
    let changed = false;
    for (const p of chain) {
      if (!this.expanded.has(p)) {
        this.expanded.add(p);
        changed = true;
      }
      if (!this.listings.has(p)) await this.relist(p, false);
    }
    this.selected = path;
    this.focused = path;
    this.render();
    if (changed) this.onWatchChange();
  }

  /** Read the first page of `path`'s children again (a children_changed
   * event, or the first expansion). Later pages are dropped: "more" reads them. */
  async relist(path, rerender = true) {
    try {
      const { json } = await api.children(path);
      this.listings.set(path, {
        children: json.children,
        next: json.children_next || null,
        cversion: json.stat.cversion,
      });
    } catch (err) {
      if (err.code === "NoNode") this.listings.set(path, { children: [], next: null, cversion: -1 });
      else this.onError(err, `listing ${path}`);
    }
    if (rerender) this.render();
  }

  async more(path) {
    const listing = this.listings.get(path);
    if (!listing || listing.next === null) return;
    try {
      const { json } = await api.children(path, listing.next);
      listing.children = listing.children.concat(json.children);
      listing.next = json.children_next || null;
    } catch (err) {
      this.onError(err, `listing ${path}`);
    }
    this.render();
  }

  /** A node was deleted: drop it (and what was open below it). */
  forget(path) {
    const parent = parentOf(path);
    const listing = parent === null ? null : this.listings.get(parent);
    if (listing) listing.children = listing.children.filter((n) => n !== nameOf(path));
    const below = path === "/" ? "/" : `${path}/`;
    for (const p of [...this.expanded]) {
      if (p === path || p.startsWith(below)) this.expanded.delete(p);
    }
    for (const p of [...this.listings.keys()]) {
      if (p === path || p.startsWith(below)) this.listings.delete(p);
    }
    if (this.focused === path || this.focused.startsWith(below)) this.focused = parent || "/";
    this.render();
    this.onWatchChange();
  }

  select(path) {
    this.selected = path;
    this.focused = path;
    this.render();
  }

  render() {
    const hadFocus = this.root.contains(document.activeElement);
    const items = document.createDocumentFragment();
    items.append(this.item("/", 1, 1, 1));
    this.root.replaceChildren(items);
    let focusable = this.root.querySelector(`[data-path="${CSS.escape(this.focused)}"]`);
    if (!focusable) {
      this.focused = "/";
      focusable = this.root.querySelector('[role="treeitem"]');
    }
    focusable.tabIndex = 0;
    if (hadFocus) focusable.focus();
  }

  item(path, level, position, setSize) {
    const li = document.createElement("li");
    li.setAttribute("role", "treeitem");
    li.dataset.path = path;
    li.tabIndex = -1;
    li.setAttribute("aria-level", String(level));
    li.setAttribute("aria-posinset", String(position));
    li.setAttribute("aria-setsize", String(setSize));
    li.setAttribute("aria-label", nameOf(path));
    const open = this.expanded.has(path);
    li.setAttribute("aria-expanded", String(open));
    li.setAttribute("aria-selected", String(path === this.selected));
    const row = document.createElement("span");
    row.className = "row";
    const twisty = document.createElement("span");
    twisty.className = "twisty";
    twisty.setAttribute("aria-hidden", "true");
    twisty.textContent = open ? "▾" : "▸";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = nameOf(path);
    row.append(twisty, label);
    li.append(row);
    if (open) {
      const group = document.createElement("ul");
      group.setAttribute("role", "group");
      const listing = this.listings.get(path);
      const names = listing ? listing.children : [];
      names.forEach((name, i) => {
        group.append(this.item(joinPath(path, name), level + 1, i + 1, names.length));
      });
      if (listing && names.length === 0) {
        const empty = document.createElement("li");
        empty.setAttribute("role", "none");
        empty.className = "empty";
        empty.textContent = "no children";
        group.append(empty);
      }
      if (listing && listing.next !== null) {
        const holder = document.createElement("li");
        holder.setAttribute("role", "none");
        const more = document.createElement("button");
        more.type = "button";
        more.className = "more";
        more.dataset.more = path;
        more.textContent = `more children of ${nameOf(path)}…`;
        holder.append(more);
        group.append(holder);
      }
      li.append(group);
    }
    return li;
  }

  visibleItems() {
    return [...this.root.querySelectorAll('[role="treeitem"]')];
  }

  focusItem(li) {
    if (!li) return;
    for (const other of this.root.querySelectorAll('[role="treeitem"][tabindex="0"]')) {
      other.tabIndex = -1;
    }
    li.tabIndex = 0;
    li.focus();
    this.focused = li.dataset.path;
  }

  onClick(e) {
    const more = e.target.closest("button[data-more]");
    if (more) {
      this.more(more.dataset.more);
      return;
    }
    const li = e.target.closest('[role="treeitem"]');
    if (!li) return;
    const path = li.dataset.path;
    this.focusItem(li);
    if (e.target.closest(".twisty")) {
      if (this.expanded.has(path)) this.collapse(path);
      else this.expand(path);
    } else {
      this.onSelect(path);
    }
  }

  onKey(e) {
    const li = e.target.closest('[role="treeitem"]');
    if (!li || e.target !== li) return;
    const path = li.dataset.path;
    const items = this.visibleItems();
    const at = items.indexOf(li);
    let handled = true;
    switch (e.key) {
      case "ArrowDown":
        this.focusItem(items[at + 1]);
        break;
      case "ArrowUp":
        this.focusItem(items[at - 1]);
        break;
      case "Home":
        this.focusItem(items[0]);
        break;
      case "End":
        this.focusItem(items[items.length - 1]);
        break;
      case "ArrowRight":
        if (!this.expanded.has(path)) this.expand(path);
        else this.focusItem(li.querySelector('[role="treeitem"]'));
        break;
      case "ArrowLeft":
        if (this.expanded.has(path)) this.collapse(path);
        else this.focusItem(li.parentElement.closest('[role="treeitem"]'));
        break;
      case "Enter":
      case " ":
        this.onSelect(path);
        break;
      default:
        handled = false;
    }
    if (handled) e.preventDefault();
  }
}
