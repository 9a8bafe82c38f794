'use strict';
// A stand-in for Baileys' socket (NGB_WA_FAKE=1), for the daemon's tests and demos; the bridge loads
// it by path from here only when asked (it is no part of the product's src/). Same interface as
// src/baileys-socket.js. Driven through a folder (NGB_WA_FAKE_DIR, default <state>/fake):
//   inbox/*.json    Baileys-shaped WAMessages ({key, message, pushName, messageTimestamp}) or
//                   {"op": "logout"} / {"op": "close"}, or a message with a file:
//                   {"op": "media", "file": "/abs/plain/bytes", "message": <WAMessage whose
//                   imageMessage/audioMessage/documentMessage/videoMessage has mimetype, caption...>,
//                   "cdn": "missing" (optional: the download fails)}; each file is consumed in name order
//   sent.jsonl      one line per sent message: {id, jid, text, quoted_id, quoted_participant}; a file
//                   sent also has {type: "image"|"document", caption, fileName, mimetype, file}, where
//                   `file` holds the bytes as a recipient downloads them (sent-media/<id>)
//   presence.jsonl  one line per presence update
//   cdn.jsonl       one line per media download asked of the fake CDN: {url, found}
// It writes a creds.json into the auth folder like Baileys does, emits a qr, then `open` (or
// `open` at once when creds exist, i.e. "already paired").
//
// Media go through Baileys' own code both ways, offline: a file in is encrypted as a sender's phone
// does (Baileys' encryptedStream: AES-CBC with keys from a random mediaKey), put on a fake media CDN
// (cdn/), and the bridge downloads it with the real downloadMediaMessage (its URL check, key
// derivation and streaming decryption); only the HTTP request is answered here (an axios adapter
// serving cdn/, since the real host is mmg.whatsapp.net). A file out goes through Baileys'
// generateWAMessageContent (encryption, thumbnail, the upload hook -> cdn/), and is downloaded back
// the same way to record the bytes a recipient would get.

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { pipeline } = require('stream/promises');
const baileys = require('baileys');

const CDN_HOST = 'https://mmg.whatsapp.net';

function createSocket({ authDir, log, onState, onQr, onMessages }) {
  const dir = process.env.NGB_WA_FAKE_DIR || path.join(authDir, '..', 'fake');
  const inbox = path.join(dir, 'inbox');
  const cdn = path.join(dir, 'cdn');
  const sentMedia = path.join(dir, 'sent-media');
  for (const d of [inbox, cdn, sentMedia]) fs.mkdirSync(d, { recursive: true });
  const me = { id: process.env.NGB_WA_FAKE_ME || '15550001111:7@s.whatsapp.net', lid: null, name: 'Andy' };
  let timer = null;
  let state = 'closed';
  let busy = false;

  function setState(s, info) { state = s; onState(s, info); }

  /** The media CDN: an axios adapter answering GET <CDN_HOST>/<directPath> from cdn/. */
  async function cdnAdapter(config) {
    const name = path.basename(new URL(config.url).pathname);
    const file = path.join(cdn, name);
    fs.appendFileSync(path.join(dir, 'cdn.jsonl'), JSON.stringify({ url: config.url, found: fs.existsSync(file) }) + '\n');
    if (!config.url.startsWith(CDN_HOST + '/') || !fs.existsSync(file)) {
      throw Object.assign(new Error('Request failed with status code 404'), { response: { status: 404 }, config });
    }
    return { data: fs.createReadStream(file), status: 200, statusText: 'OK', headers: {}, config, request: {} };
  }

  // Baileys' encryptedStream returns before its file's write stream has opened or flushed it:
  // wait until the file exists and is whole (its sha256 is the one Baileys computed) before "uploading" it.
  async function whole(file, sha256B64) {
    for (let i = 0; i < 1000; i++) {
      if (fs.existsSync(file) && crypto.createHash('sha256').update(fs.readFileSync(file)).digest('base64') === sha256B64) return;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error(`fake CDN: ${file} never became whole`);
  }

  async function upload(encFilePath, { fileEncSha256B64 }) {
    await whole(encFilePath, fileEncSha256B64);
    const name = crypto.randomBytes(16).toString('hex') + '.enc';
    fs.copyFileSync(encFilePath, path.join(cdn, name));
    const directPath = `/v/t62.7118-24/${name}`;
    return { mediaUrl: CDN_HOST + directPath, directPath };
  }

  /** A phone sending `item.file`: encrypted, uploaded to cdn/, its keys and URL in the message. */
  async function withMedia(item) {
    const message = item.message;
    const type = Object.keys(message.message).find((k) => /^(image|audio|document|video|sticker)Message$/.test(k));
    const content = message.message[type];
    const enc = await baileys.encryptedStream({ url: item.file }, type.replace('Message', ''));
    const { mediaUrl, directPath } = item.cdn === 'missing' ? { mediaUrl: `${CDN_HOST}/v/t62.7118-24/gone.enc`, directPath: '/v/t62.7118-24/gone.enc' }
      : await upload(enc.encFilePath, { fileEncSha256B64: enc.fileEncSha256.toString('base64') });
    fs.rmSync(enc.encFilePath, { force: true });
    Object.assign(content, {
      url: mediaUrl,
      directPath,
      mediaKey: enc.mediaKey.toString('base64'),
      fileSha256: enc.fileSha256.toString('base64'),
      fileEncSha256: enc.fileEncSha256.toString('base64'),
      fileLength: content.fileLength !== undefined ? content.fileLength : enc.fileLength, // a test may declare another size
    });
    return message;
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      let names = [];
      try { names = fs.readdirSync(inbox).filter((n) => n.endsWith('.json')).sort(); } catch (err) { names = []; }
      for (const name of names) {
        const file = path.join(inbox, name);
        let item;
        try { item = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (err) { continue; } // half-written: next tick
        const messages = [];
        for (const one of Array.isArray(item) ? item : [item]) {
          if (one.op === 'logout') setState('logged_out', { reason: 'fake: logged out' });
          else if (one.op === 'close') { setState('closed', { reason: 'fake: closed' }); setTimeout(() => setState('open', { me }), 100); }
          else if (one.op === 'media') messages.push(await withMedia(one));
          else messages.push(one);
        }
        if (messages.length) onMessages(messages); // buffered (fsync'd) before this returns
        fs.rmSync(file);
      }
    } catch (err) {
      log(`fake socket: ${err.stack || err}`);
    } finally {
      busy = false;
    }
  }

  function download(raw, { signal } = {}) {
    return baileys.downloadMediaMessage(raw, 'stream', { options: { signal, adapter: cdnAdapter } });
  }

  function record(line) { fs.appendFileSync(path.join(dir, 'sent.jsonl'), JSON.stringify(line) + '\n'); }

  function check(text) {
    if (state !== 'open') throw Object.assign(new Error(`fake: not connected (${state})`), { retryable: true });
    if (String(text || '').includes('FAKE-FAIL-PERMANENT')) throw Object.assign(new Error('fake: refused'), { retryable: false });
    return '3EB0' + crypto.randomBytes(8).toString('hex').toUpperCase();
  }

  function quoteOf(quoted) {
    return { quoted_id: quoted ? quoted.key.id : null, quoted_participant: quoted ? quoted.key.participant || null : null };
  }

  return {
    async start() {
      setState('connecting');
      const creds = path.join(authDir, 'creds.json');
      let pairAfter = 50;
      if (!fs.existsSync(creds)) { // not paired yet: show a QR, "the phone scans it" after a while
        onQr('2@FAKE-QR-' + crypto.randomBytes(8).toString('hex'));
        pairAfter = Number(process.env.NGB_WA_FAKE_PAIR_AFTER_MS || 50);
      }
      setTimeout(() => {
        if (!fs.existsSync(creds)) {
          fs.writeFileSync(creds, JSON.stringify({ me, fake: true, noiseKey: crypto.randomBytes(32).toString('base64') }));
          fs.writeFileSync(path.join(authDir, 'pre-key-1.json'), JSON.stringify({ fake: true }));
        }
        setState('open', { me });
        timer = setInterval(poll, 20);
      }, pairAfter);
    },
    me: () => (state === 'open' ? me : null),
    async send(jid, text, quoted) {
      const id = check(text);
      record({ id, jid, text, ...quoteOf(quoted) });
      return id;
    },
    async sendMedia(jid, content, quoted) {
      const id = check(content.caption);
      const message = await baileys.generateWAMessageContent(content, { upload });
      const type = Object.keys(message).find((k) => k.endsWith('Message'));
      const sent = message[type];
      const file = path.join(sentMedia, id);
      const stream = await download({ key: { id }, message });
      await pipeline(stream, fs.createWriteStream(file));
      record({ id, jid, text: sent.caption || '', type: type.replace('Message', ''), caption: sent.caption || null,
        fileName: sent.fileName || null, mimetype: sent.mimetype || null, file, ...quoteOf(quoted) });
      return id;
    },
    download,
    async presence(jid, s) { fs.appendFileSync(path.join(dir, 'presence.jsonl'), JSON.stringify({ jid, state: s }) + '\n'); },
    async stop() { if (timer) clearInterval(timer); },
  };
}

module.exports = { createSocket, name: 'fake' };
