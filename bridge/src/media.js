'use strict';
// Files in and out (PROTOCOL.md "Media"). In: the media of a WhatsApp message is downloaded (the
// adapter's `download(raw, {signal})`, Baileys' downloadMediaMessage as a stream) into the folder
// the daemon gave (NGB_WA_MEDIA_DIR, 0700; files 0600), never past the daemon's size limit; the
// daemon reads the file and deletes it. Out: a send_file frame -> the content Baileys' sendMessage
// takes (an image message for images, a document message otherwise).

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { pipeline } = require('stream/promises');
const { Writable } = require('stream');

// WhatsApp's message types that carry a file the daemon takes -> the protocol's `kind`
const DOWNLOAD = /^[0-9a-f]{24}\.bin$/; // the names fetch() gives its files
const MEDIA_TYPES = { imageMessage: 'image', videoMessage: 'video', audioMessage: 'audio', documentMessage: 'document' };

function toNumber(value) {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'object' && typeof value.toNumber === 'function') return value.toNumber(); // a protobuf Long
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

/** The file an (unwrapped) message carries, as the `media` field of its frame; null for none. */
function mediaOf(m) {
  for (const [type, kind] of Object.entries(MEDIA_TYPES)) {
    const content = m[type];
    if (!content || typeof content !== 'object') continue;
    return {
      type,
      kind: type === 'audioMessage' && content.ptt ? 'voice' : kind,
      mimetype: content.mimetype || null,
      fileName: content.fileName || null,
      fileLength: toNumber(content.fileLength),
      caption: content.caption || '',
      path: null,
      error: null,
      ready: false,
    };
  }
  return null;
}

/** A WAMessage that went through JSON (the inbox file) with its bytes fields back as Buffers. */
function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (!value || typeof value !== 'object' || Buffer.isBuffer(value) || value instanceof Uint8Array) return value;
  if (value.type === 'Buffer' && Array.isArray(value.data)) return Buffer.from(value.data);
  const out = {};
  for (const [k, v] of Object.entries(value)) out[k] = revive(v);
  return out;
}

class MediaFolder {
  /**
   * @param dir        where downloads go (the daemon reads them from there)
   * @param maxBytes   the daemon's limit for one file: a larger one is not downloaded / cut off
   * @param timeoutMs  one download's time limit
   */
  constructor({ dir, maxBytes = 20 * 1024 * 1024, timeoutMs = 60000, log = () => {} }) {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.timeoutMs = timeoutMs;
    this.log = log;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
  }

  /** Remove downloads no buffered message refers to (the daemon took them, or a crash tore them). */
  sweep(keep) {
    const wanted = new Set([...keep].filter(Boolean).map((p) => path.resolve(p)));
    for (const name of fs.readdirSync(this.dir)) {
      const file = path.join(this.dir, name);
      if (DOWNLOAD.test(name) && !wanted.has(file)) fs.rmSync(file, { force: true }); // only our own
    }
  }

  forget(media) {
    if (media && media.path && DOWNLOAD.test(path.basename(media.path)) && path.dirname(path.resolve(media.path)) === path.resolve(this.dir)) {
      fs.rmSync(media.path, { force: true });
    }
  }

  /**
   * Download the file of `raw` (described by `media`, the frame's field) with `download(raw, {signal})`
   * -> a readable stream. Returns the new `media` field: `path` set, or `error` (text) and
   * `too_large` when it is not there. Never throws.
   */
  async fetch(raw, media, download) {
    const done = { ...media, ready: true, path: null, error: null };
    if (media.fileLength !== null && media.fileLength > this.maxBytes) {
      return { ...done, error: `declared ${media.fileLength} bytes > ${this.maxBytes}`, too_large: true };
    }
    const file = path.join(this.dir, `${crypto.randomBytes(12).toString('hex')}.bin`);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`timed out after ${this.timeoutMs} ms`)), this.timeoutMs);
    let size = 0;
    const max = this.maxBytes;
    try {
      const aborted = new Promise((_, reject) => abort.signal.addEventListener('abort', () => reject(abort.signal.reason)));
      aborted.catch(() => {}); // only raced against
      const stream = await Promise.race([download(revive(raw), { signal: abort.signal }), aborted]);
      const out = fs.createWriteStream(file, { flags: 'wx', mode: 0o600 });
      const limited = new Writable({
        write(chunk, _enc, cb) {
          size += chunk.length;
          if (size > max) { cb(Object.assign(new Error(`over ${max} bytes`), { tooLarge: true })); return; }
          if (out.write(chunk)) cb(); else out.once('drain', cb);
        },
        final(cb) { out.end(cb); },
        destroy(err, cb) { out.destroy(); cb(err); },
      });
      await pipeline(stream, limited, { signal: abort.signal });
      return { ...done, path: file, size };
    } catch (err) {
      fs.rmSync(file, { force: true });
      const reason = abort.signal.aborted ? String(abort.signal.reason && abort.signal.reason.message) : String(err && err.message || err);
      this.log(`media download of ${raw && raw.key && raw.key.id} failed: ${reason}`);
      return err && err.tooLarge ? { ...done, error: reason, too_large: true } : { ...done, error: reason.slice(0, 200) };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A `send_file` frame -> [the content for sendMessage, the kind sent]. */
function contentFor(msg) {
  const caption = msg.caption || undefined;
  if (msg.kind === 'image') return [{ image: { url: msg.path }, caption, mimetype: msg.mime || undefined }, 'image'];
  return [{ document: { url: msg.path }, mimetype: msg.mime || 'application/octet-stream', fileName: msg.name || 'file', caption }, 'document'];
}

module.exports = { MediaFolder, mediaOf, contentFor, revive, MEDIA_TYPES };
