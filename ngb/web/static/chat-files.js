"use strict";
// Files on the local chat page (chat.html): the composer's picker (button, drag and drop, paste;
// chosen files shown as removable chips) and a message's attachments (images inline with a
// viewer, audio and video players, other files as links with name and size).
// Names only ever reach the page through textContent; links only to our own origin.
window.NgbFiles = (() => {
  const KB = 1024, MB = 1024 * 1024;
  const PREVIEW_MAX = 8 * MB;   // chips show a thumbnail of images up to this size (read locally)
  const KIND_BADGE = { image: "IMG", audio: "AUD", voice: "VOX", video: "VID", document: "DOC", other: "FILE", pending: "…" };

  function el(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text != null) n.textContent = text;
    return n;
  }

  // "512 B", "12 KB", "2.5 MB", "31 MB": as the daemon's notes write sizes.
  function sizeText(n) {
    if (!Number.isFinite(n) || n < 0) return "";
    if (n < KB) return `${n} B`;
    if (n >= 10 * MB) return `${Math.round(n / MB)} MB`;
    if (n >= MB) return `${(n / MB).toFixed(1).replace(/\.0$/, "")} MB`;
    return `${Math.max(1, Math.round(n / KB))} KB`;
  }

  // Only links to our own origin (the daemon serves /api/files/<id>); anything else: no link.
  function fileUrl(url) {
    if (typeof url !== "string" || !url) return null;
    try {
      const u = new URL(url, location.origin);
      return u.origin === location.origin ? u.pathname + u.search : null;
    } catch { return null; }
  }

  const nameOf = (a) => String(a.name || "file");
  // A file's badge: its extension ("PDF", "CSV"), else its kind; drawn with text, no icon font needed.
  function badge(name, kind) {
    const m = /\.([A-Za-z0-9]{1,4})$/.exec(String(name || ""));
    return kind === "pending" ? KIND_BADGE.pending : m ? m[1].toUpperCase() : KIND_BADGE[kind] || KIND_BADGE.other;
  }
  const label = (a) => [nameOf(a), sizeText(a.size)].filter(Boolean).join(" · ");

  // ---------------------------------------------------------------- the image viewer
  function openViewer(a, url) {
    const dlg = document.getElementById("viewer");
    if (!dlg) { window.open(url, "_blank", "noopener"); return; }
    if (!dlg.dataset.wired) {
      dlg.dataset.wired = "1";
      const close = () => { dlg.close(); document.getElementById("viewer-img").removeAttribute("src"); };
      document.getElementById("viewer-close").addEventListener("click", close);
      dlg.addEventListener("click", (e) => { if (e.target === dlg) close(); });  // the backdrop
    }
    const img = document.getElementById("viewer-img");
    img.src = url; img.alt = nameOf(a);
    document.getElementById("viewer-name").textContent = label(a);
    const dl = document.getElementById("viewer-download");
    dl.href = url; dl.setAttribute("download", nameOf(a));
    if (!dlg.open) { try { dlg.showModal(); } catch { dlg.setAttribute("open", ""); } }
    document.getElementById("viewer-close").focus();
  }

  // ---------------------------------------------------------------- attachments of a message
  function fileLink(a, url) {
    const kind = String(a.kind || "other");
    const box = url ? el("a", "att-file") : el("span", "att-file");
    if (url) { box.href = url; box.setAttribute("download", nameOf(a)); box.rel = "noopener"; }
    box.dataset.kind = kind;
    const icon = el("span", "att-icon", badge(a.name, kind)); icon.setAttribute("aria-hidden", "true");
    box.append(icon, el("span", "att-name", nameOf(a)));
    if (sizeText(a.size)) box.append(el("span", "att-size", sizeText(a.size)));
    if (url) box.title = `Download ${label(a)}`;
    if (a.gone) { box.classList.add("gone"); box.append(el("span", "att-size", "no longer kept")); }
    return box;
  }

  function image(a, url) {
    const b = el("button", "att-image");
    b.type = "button";
    b.setAttribute("aria-label", `Open image ${label(a)}`);
    b.title = label(a);
    const img = el("img");
    img.src = url; img.alt = nameOf(a); img.loading = "lazy"; img.decoding = "async";
    img.addEventListener("error", () => b.replaceWith(fileLink(a, url)), { once: true });
    b.append(img);
    b.addEventListener("click", () => openViewer(a, url));
    return b;
  }

  function player(tag, a, url) {
    const fig = el("figure", `att-media att-${tag}`);
    const m = el(tag);
    m.controls = true; m.preload = tag === "video" ? "metadata" : "none"; m.src = url;
    m.setAttribute("aria-label", label(a));
    fig.append(m, fileLink(a, url));
    if (typeof a.transcript === "string" && a.transcript) {
      const t = el("figcaption", "att-transcript", a.transcript);
      t.title = "Transcript";
      fig.append(t);
    }
    return fig;
  }

  // A container with one item per attachment, or null when there are none.
  function renderAttachments(list) {
    if (!Array.isArray(list) || !list.length) return null;
    const box = el("div", "attachments");
    for (const a of list) {
      if (!a || typeof a !== "object") continue;
      const url = a.gone ? null : fileUrl(a.url);  // gone: removed by the media retention
      const kind = String(a.kind || "other");
      if (url && kind === "image") box.append(image(a, url));
      else if (url && (kind === "audio" || kind === "voice")) box.append(player("audio", a, url));
      else if (url && kind === "video") box.append(player("video", a, url));
      else box.append(fileLink(a, url));
    }
    return box.childElementCount ? box : null;
  }

  // ---------------------------------------------------------------- the composer's picker
  function stamp() {
    const d = new Date(), p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
  }
  // A pasted screenshot comes as "image.png": give it a name worth keeping.
  function named(f) {
    if (f.name && !/^image\.\w+$/i.test(f.name)) return f;
    const ext = (f.type.split("/")[1] || "png").replace(/[^\w]/g, "").slice(0, 8) || "png";
    try { return new File([f], `screenshot-${stamp()}.${ext}`, { type: f.type, lastModified: f.lastModified }); } catch { return f; }
  }

  // opts: input (the hidden <input type=file>), button, chips (<ul>), zone (drop target),
  // overlay (shown while dragging), pasteTarget, onChange(files), refuse(file) -> reason or null.
  function Picker(opts) {
    let files = [];
    let depth = 0;
    const changed = () => { render(); opts.onChange && opts.onChange(files.slice()); };

    function add(list) {
      let added = 0;
      for (const f of list || []) {
        if (!(f instanceof File)) continue;
        const reason = opts.refuse ? opts.refuse(f) : null;
        if (reason) { opts.onRefused && opts.onRefused(reason); continue; }
        files.push(named(f)); added++;
      }
      if (added) changed();
      return added;
    }
    function remove(i) {
      files.splice(i, 1); changed();
      const rest = opts.chips.querySelectorAll(".chip-remove");
      (rest[Math.min(i, rest.length - 1)] || opts.focusAfter || opts.button).focus();
    }
    function render() {
      opts.chips.replaceChildren();
      opts.chips.hidden = !files.length;
      files.forEach((f, i) => {
        const li = el("li", "chip");
        li.dataset.name = f.name;
        if (f.type.startsWith("image/") && f.size <= PREVIEW_MAX) {
          const img = el("img", "chip-thumb"); img.alt = "";
          const r = new FileReader();
          r.onload = () => { if (typeof r.result === "string" && r.result.startsWith("data:image/")) img.src = r.result; };
          r.readAsDataURL(f);
          li.append(img);
        } else {
          const icon = el("span", "chip-icon att-icon", badge(f.name, kindOf(f.type))); icon.setAttribute("aria-hidden", "true");
          li.append(icon);
        }
        li.append(el("span", "chip-name", f.name), el("span", "chip-size", sizeText(f.size)));
        const x = el("button", "chip-remove", "×");
        x.type = "button"; x.setAttribute("aria-label", `Remove ${f.name}`); x.title = "Remove";
        x.addEventListener("click", () => remove(i));
        li.append(x);
        opts.chips.append(li);
      });
    }

    opts.button.addEventListener("click", () => opts.input.click());
    opts.input.addEventListener("change", () => { add(opts.input.files); opts.input.value = ""; });
    const hasFiles = (e) => !!e.dataTransfer && [...e.dataTransfer.types].includes("Files");
    opts.zone.addEventListener("dragenter", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault(); depth++; opts.overlay.hidden = false;
    });
    opts.zone.addEventListener("dragover", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault(); e.dataTransfer.dropEffect = "copy";
    });
    opts.zone.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; opts.overlay.hidden = true; } });
    opts.zone.addEventListener("drop", (e) => {
      depth = 0; opts.overlay.hidden = true;
      if (!e.dataTransfer || !e.dataTransfer.files.length) return;
      e.preventDefault();
      add(e.dataTransfer.files);
      opts.focusAfter && opts.focusAfter.focus();
    });
    // A file dropped anywhere else must not make the browser leave the chat to show it.
    window.addEventListener("dragover", (e) => {
      if (hasFiles(e) && !opts.zone.contains(e.target)) { e.preventDefault(); e.dataTransfer.dropEffect = "none"; }
    });
    window.addEventListener("drop", (e) => { if (hasFiles(e)) e.preventDefault(); });
    opts.pasteTarget.addEventListener("paste", (e) => {
      const list = e.clipboardData ? [...e.clipboardData.files] : [];
      if (!list.length) return;
      if (!e.clipboardData.getData("text/plain")) e.preventDefault();  // a screenshot: no text to paste
      add(list);
    });

    return {
      files: () => files.slice(),
      add,
      clear() { files = []; changed(); },
      restore(list) { files = [...list, ...files]; changed(); },
    };
  }

  function kindOf(mime) {
    mime = String(mime || "");
    if (mime.startsWith("image/")) return "image";
    if (mime.startsWith("audio/")) return "audio";
    if (mime.startsWith("video/")) return "video";
    if (mime.startsWith("text/") || mime === "application/pdf") return "document";
    return "other";
  }

  return { sizeText, fileUrl, renderAttachments, openViewer, Picker, kindOf };
})();
