// Showing a znode's data: JSON pretty-printed and highlighted, other text as
// text, binary as a hex dump or base64. Everything is built from text nodes
// and spans: data is never parsed as HTML.

const INDENT = "  ";

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

/** The parsed value when `text` is a JSON object or array, else undefined. */
export function parseJsonDocument(text) {
  const t = text.trim();
  if (!(t.startsWith("{") || t.startsWith("["))) return undefined;
  try {
    return JSON.parse(t);
  } catch {
    return undefined;
  }
}

/** Append `value` to `out` as indented, highlighted JSON. */
export function appendJson(out, value, depth = 0) {
  const pad = INDENT.repeat(depth);
  if (value === null) {
    out.append(span("j-null", "null"));
  } else if (Array.isArray(value)) {
    if (value.length === 0) {
      out.append(span("j-punct", "[]"));
      return;
    }
    out.append(span("j-punct", "["), "\n");
    value.forEach((item, i) => {
      out.append(pad + INDENT);
      appendJson(out, item, depth + 1);
      if (i < value.length - 1) out.append(span("j-punct", ","));
      out.append("\n");
    });
    out.append(pad, span("j-punct", "]"));
  } else if (typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 0) {
      out.append(span("j-punct", "{}"));
      return;
    }
    out.append(span("j-punct", "{"), "\n");
    keys.forEach((key, i) => {
      out.append(pad + INDENT, span("j-key", JSON.stringify(key)), span("j-punct", ": "));
      appendJson(out, value[key], depth + 1);
      if (i < keys.length - 1) out.append(span("j-punct", ","));
      out.append("\n");
    });
    out.append(pad, span("j-punct", "}"));
  } else if (typeof value === "string") {
    out.append(span("j-string", JSON.stringify(value)));
  } else if (typeof value === "number") {
    out.append(span("j-number", String(value)));
  } else {
    out.append(span("j-bool", String(value)));
  }
}

export function base64ToBytes(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

const HEX_ROW_BYTES = 16;

/** A classic hex dump: offset, 16 bytes in hex, the printable ASCII. */
export function hexDump(bytes) {
  const rows = [];
  for (let at = 0; at < bytes.length; at += HEX_ROW_BYTES) {
    const row = bytes.subarray(at, at + HEX_ROW_BYTES);
    const hex = [...row].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    rows.push(`${at.toString(16).padStart(8, "0")}  ${hex.padEnd(HEX_ROW_BYTES * 3 - 1)}  |${ascii}|`);
  }
  return rows.join("\n");
}

/**
 * Fill `pre` with the data of a read or event ({data, encoding}).
 * `binaryAs`: "hex" or "base64". Returns what was shown: "json", "text",
 * "empty", "hex" or "base64".
 */
export function showData(pre, data, encoding, binaryAs) {
  pre.replaceChildren();
  pre.className = "data";
  if (encoding === "base64") {
    const shown = binaryAs === "base64" ? data : hexDump(base64ToBytes(data));
    pre.textContent = shown;
    pre.classList.add("binary");
    return binaryAs === "base64" ? "base64" : "hex";
  }
  if (data === "") {
    pre.append(span("muted", "(empty)"));
    return "empty";
  }
  const parsed = parseJsonDocument(data);
  if (parsed !== undefined) {
    appendJson(pre, parsed);
    pre.classList.add("json");
    return "json";
  }
  pre.textContent = data;
  return "text";
}
