'use strict';
// NanoGridBot's WhatsApp bridge. Holds the WhatsApp Web session and talks to the daemon over one
// local websocket (PROTOCOL.md). Normally started and supervised by the daemon
// (ngb/channels/whatsapp.py); environment:
//   NGB_WA_DAEMON_URL  ws://127.0.0.1:<port>/whatsapp   the daemon's endpoint (required)
//   NGB_WA_TOKEN       the shared secret, sent as "Authorization: Bearer <token>" (required)
//   NGB_WA_STATE_DIR   <state>/whatsapp: auth/ (credentials, 0600) and inbox/ (unacked messages)
//   NGB_WA_MEDIA_DIR   where downloaded media go for the daemon to take (default <state>/media)
//   NGB_WA_MEDIA_MAX_BYTES, NGB_WA_MEDIA_TIMEOUT_MS   the daemon's limits for one file in
//   NGB_WA_FAKE=1      use test/fake-socket.js instead of Baileys (the daemon's tests, demos)
//   NGB_WA_EXIT_ON_STDIN_EOF=1  exit when the parent closes our stdin (set by the daemon, so a
//                      killed daemon never leaves a second session holder behind)
// startBridge() is the bridge without the process around it (environment, signals, stdin), so a
// test can run it in-process with any adapter (test/baileys-adapter.test.js: the real Baileys one).

const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const { InboundBuffer } = require('./buffer');
const { normalize } = require('./normalize');
const { MediaFolder, contentFor } = require('./media');

const PROTOCOL_VERSION = 1;
const STORE_FAILED = 4000; // the daemon's close code: "could not store a message; offer it again"

function defaultLog(msg) { process.stderr.write(`[wa-bridge] ${msg}\n`); }

/**
 * Run the bridge: the WhatsApp socket from `adapter` (test/fake-socket.js or baileys-socket.js, or
 * `createSocket` options via `socketOptions`), the on-disk buffer in stateDir, the daemon link.
 * `media` ({dir, maxBytes, timeoutMs}) is where and how inbound files are downloaded.
 * `exit(code)` is called where the process would exit. Returns {stop, buffer, sock}.
 */
function startBridge({ url, token, stateDir, adapter, socketOptions = {}, media = {}, exit = (code) => process.exit(code), log = defaultLog }) {
  const authDir = path.join(stateDir, 'auth');
  fs.mkdirSync(authDir, { recursive: true, mode: 0o700 });
  for (const d of [stateDir, authDir]) fs.chmodSync(d, 0o700);
  for (const name of fs.readdirSync(authDir)) fs.chmodSync(path.join(authDir, name), 0o600); // older files too
  const buffer = new InboundBuffer(path.join(stateDir, 'inbox'));
  const files = new MediaFolder({ dir: media.dir || path.join(stateDir, 'media'), maxBytes: media.maxBytes, timeoutMs: media.timeoutMs, log });
  files.sweep(buffer.pending().map((e) => e.frame.media && e.frame.media.path)); // taken, or torn by a crash
  const recent = new Map(); // WhatsApp id -> raw WAMessage, for quoting replies (bounded)

  let waState = 'connecting';
  let waInfo = {};
  let lastQr = null;
  let ws = null;
  let authed = false;

  const sock = adapter.createSocket({
    ...socketOptions,
    authDir,
    log,
    onState(state, info = {}) {
      waState = state;
      waInfo = info;
      if (state !== 'qr' && state !== 'connecting') lastQr = state === 'open' ? null : lastQr;
      log(`whatsapp: ${state}${info.reason ? ` (${info.reason})` : ''}`);
      frame({ type: 'state', state, reason: info.reason || null, me: sock ? sock.me() : null });
      if (state === 'open') fixPermissions();
    },
    onQr(qr) {
      lastQr = qr;
      waState = 'qr';
      frame({ type: 'state', state: 'qr', reason: null, me: null });
      frame({ type: 'qr', qr });
    },
    onMessages(raws) {
      for (const raw of raws) {
        let fields = null;
        try { fields = normalize(raw, sock.me()); } catch (err) { log(`skipped a message: ${err.message}`); }
        if (!fields) continue;
        remember(raw);
        const entry = buffer.put(fields, raw); // on disk before anyone sees it
        if (entry && entry.frame.media && !entry.frame.media.ready) download(entry, raw).catch((err) => log(`media: ${err.message}`));
      }
      flush();
      fixPermissions();
    },
  });

  // Message frames go out in buffer order; one whose media is still downloading holds back the
  // ones behind it (a photo and then "what is this?" reach the daemon in that order).
  let sentSeq = 0; // the newest seq framed on this connection
  function flush() {
    if (!ws || !authed || ws.readyState !== WebSocket.OPEN) return;
    for (const entry of buffer.pending()) {
      if (entry.seq <= sentSeq) continue;
      if (entry.frame.media && !entry.frame.media.ready) return;
      frame({ type: 'message', ...entry.frame });
      sentSeq = entry.seq;
    }
  }

  async function download(entry, raw) {
    const id = entry.frame.id;
    const done = await files.fetch(raw, entry.frame.media, (msg, opts) => sock.download(msg, opts));
    const current = buffer.entries.get(id);
    if (!current) { files.forget(done); return; } // acked meanwhile (cannot happen before it was sent)
    buffer.update(id, { ...current.frame, media: done }); // on disk: a restart does not download again
    flush();
  }
  for (const entry of buffer.pending()) { // a download a crash interrupted: again
    if (entry.frame.media && !entry.frame.media.ready) download(entry, entry.raw).catch((err) => log(`media: ${err.message}`));
  }

  function fixPermissions() {
    try { for (const name of fs.readdirSync(authDir)) fs.chmodSync(path.join(authDir, name), 0o600); } catch (err) { /* best effort */ }
  }

  function remember(raw) {
    if (!raw || !raw.key || !raw.key.id) return;
    recent.set(raw.key.id, raw);
    if (recent.size > 1000) recent.delete(recent.keys().next().value);
  }

  function frame(obj) {
    if (ws && authed && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function quotedFor(msg) {
    if (!msg.quoted_id) return undefined;
    const known = recent.get(msg.quoted_id) || (buffer.entries.get(msg.quoted_id) || {}).raw;
    if (known) return known;
    const group = String(msg.chat).endsWith('@g.us');
    return {
      key: { remoteJid: msg.chat, id: msg.quoted_id, fromMe: false, participant: group ? (msg.quoted_sender || undefined) : undefined },
      message: { conversation: msg.quoted_text || '' },
    };
  }

  async function handle(msg) {
    switch (msg.type) {
      case 'ack': {
        const entry = buffer.entries.get(msg.id);
        if (entry) files.forget(entry.frame.media); // the daemon took it (and deletes it itself)
        buffer.ack(msg.id);
        storeFailures = 0;
        break;
      }
      case 'send_file': {
        try {
          if (!msg.path || !fs.existsSync(msg.path)) throw Object.assign(new Error(`no file at ${msg.path}`), { retryable: false });
          const [content, kind] = contentFor(msg);
          const id = await sock.sendMedia(msg.chat, content, quotedFor(msg));
          frame({ type: 'sent', req: msg.req, id, kind });
        } catch (err) {
          frame({ type: 'send_error', req: msg.req, error: String(err.message || err), retryable: err.retryable !== false });
        }
        break;
      }
      case 'send': {
        try {
          const id = await sock.send(msg.chat, msg.text, quotedFor(msg));
          frame({ type: 'sent', req: msg.req, id });
        } catch (err) {
          const retryable = err.retryable !== false;
          frame({ type: 'send_error', req: msg.req, error: String(err.message || err), retryable });
        }
        break;
      }
      case 'presence':
        try { await sock.presence(msg.chat, msg.state || 'composing'); } catch (err) { /* cosmetic */ }
        break;
      case 'ping':
        frame({ type: 'pong', t: msg.t || null });
        break;
      default:
        log(`unknown frame type ${JSON.stringify(msg.type)}`);
    }
  }

  let attempt = 0;
  let stopping = false;
  let storeFailures = 0; // consecutive connections the daemon closed because its store failed
  function connectDaemon() {
    if (stopping) return;
    const socket = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` }, perMessageDeflate: false });
    ws = socket;
    socket.on('open', () => {
      attempt = 0;
      authed = true;
      sentSeq = 0;
      frame({ type: 'hello', version: PROTOCOL_VERSION, bridge: `ngb-whatsapp-bridge/${require('../package.json').version}`, adapter: adapter.name, state: waState, reason: waInfo.reason || null, me: sock.me(), pending: buffer.size });
      if (waState === 'qr' && lastQr) frame({ type: 'qr', qr: lastQr });
      flush(); // redelivery: every unacked message, in order
    });
    socket.on('message', (data) => {
      let msg;
      try { msg = JSON.parse(String(data)); } catch (err) { log('a frame that is not JSON'); return; }
      handle(msg).catch((err) => log(`frame ${msg.type} failed: ${err.message}`));
    });
    socket.on('unexpected-response', (req, res) => {
      log(`the daemon refused the connection: HTTP ${res.statusCode}`);
      if (res.statusCode === 401 || res.statusCode === 403) exit(3); // wrong token: a restart by the daemon fixes it
    });
    socket.on('error', (err) => { if (attempt < 3) log(`daemon link: ${err.message}`); });
    socket.on('close', (code, reason) => {
      authed = false;
      if (ws !== socket || stopping) return;
      let delay = Math.min(5000, 100 * 2 ** Math.min(attempt++, 6));
      if (code === STORE_FAILED) { // not stored, so not acked: offer it again, backing off while the store is down
        delay = Math.min(10000, 250 * 2 ** Math.min(storeFailures++, 6));
        log(`the daemon could not store a message (${String(reason)}); offering it again in ${delay} ms`);
      }
      setTimeout(connectDaemon, delay);
    });
  }

  async function stop() {
    stopping = true;
    try { await sock.stop(); } catch (err) { /* stopping anyway */ }
    try { if (ws) ws.close(1001, 'bridge stopping'); } catch (err) { /* stopping anyway */ }
  }

  log(`starting (${adapter.name}; state ${stateDir}; ${buffer.size} unacked message(s) buffered)`);
  connectDaemon();
  sock.start().catch((err) => { log(`whatsapp socket failed to start: ${err.stack || err}`); exit(1); });
  return { stop, buffer, sock };
}

function main() {
  const url = process.env.NGB_WA_DAEMON_URL;
  const token = process.env.NGB_WA_TOKEN;
  const stateDir = path.resolve(process.env.NGB_WA_STATE_DIR || 'state/whatsapp');
  if (!url || !token) { defaultLog('NGB_WA_DAEMON_URL and NGB_WA_TOKEN are required'); process.exit(2); }
  process.umask(0o077); // every file we (and Baileys) create: owner only
  // the fake WhatsApp lives with the tests; it is loaded (by path) only when asked for
  const adapter = process.env.NGB_WA_FAKE === '1' ? require(path.join(__dirname, '..', 'test', 'fake-socket.js')) : require('./baileys-socket');
  const number = (value) => (value && Number(value) >= 0 ? Number(value) : undefined);
  const media = { dir: process.env.NGB_WA_MEDIA_DIR || undefined, maxBytes: number(process.env.NGB_WA_MEDIA_MAX_BYTES),
    timeoutMs: number(process.env.NGB_WA_MEDIA_TIMEOUT_MS) };
  const bridge = startBridge({ url, token, stateDir, adapter, media });
  async function shutdown(code) {
    await bridge.stop();
    setTimeout(() => process.exit(code), 50);
  }
  process.on('SIGTERM', () => shutdown(0));
  process.on('SIGINT', () => shutdown(0));
  if (process.env.NGB_WA_EXIT_ON_STDIN_EOF === '1') {
    process.stdin.on('end', () => { defaultLog('the daemon went away; stopping'); shutdown(0); });
    process.stdin.on('error', () => shutdown(0));
    process.stdin.resume();
  }
}

if (require.main === module) main();
module.exports = { startBridge, STORE_FAILED, PROTOCOL_VERSION };
