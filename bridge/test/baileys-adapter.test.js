'use strict';
// The real Baileys adapter (src/baileys-socket.js) inside the real bridge (src/index.js startBridge),
// at its boundary: the real `baileys` module (its event emitter, auth-state files, DisconnectReason,
// protobuf messages) with only makeWASocket replaced by a socket that never touches the network.
// Baileys events go in; the frames the daemon would see come out of a real websocket.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const WebSocket = require('ws');
const baileys = require('baileys');
const pino = require('pino');
const { startBridge, STORE_FAILED } = require('../src/index');
const adapter = require('../src/baileys-socket');

const TOKEN = 'test-token-0123456789';
const ME = { id: '15550001111:7@s.whatsapp.net', lid: '99887766:7@lid', name: 'Andy' };
const GROUP = '120363000000000001@g.us';

/** The daemon's side: a websocket server that checks the token and collects frames. */
function fakeDaemon() {
  const server = new WebSocket.Server({ host: '127.0.0.1', port: 0 });
  const frames = [];
  const waiters = [];
  let conn = null;
  const connections = [];
  server.on('connection', (socket, req) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) { socket.close(1008); return; }
    conn = socket;
    connections.push(socket);
    socket.on('message', (data) => {
      frames.push(JSON.parse(String(data)));
      for (const w of waiters.splice(0)) w();
    });
  });
  async function next(pred, what) {
    const deadline = Date.now() + 10000;
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`no frame ${what}; got ${JSON.stringify(frames)}`);
      await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 50); });
    }
  }
  return {
    server, frames, connections,
    url: () => `ws://127.0.0.1:${server.address().port}/whatsapp`,
    send: (obj) => conn.send(JSON.stringify(obj)),
    next,
    type: (type, more = () => true) => next((f) => f.type === type && more(f), type),
    close: () => new Promise((resolve) => { for (const c of connections) c.terminate(); server.close(resolve); }),
  };
}

/** makeWASocket without the network: Baileys' own event buffer as `ev`, sends recorded. */
function offlineBaileys() {
  const sockets = [];
  const logger = pino({ level: 'silent' });
  function makeWASocket(config) {
    const sock = {
      config,
      ev: baileys.makeEventBuffer(logger),
      user: undefined,
      sent: [],
      presences: [],
      ended: false,
      failNext: null,
      async sendMessage(jid, content, options) {
        if (sock.failNext) { const err = sock.failNext; sock.failNext = null; throw err; }
        sock.sent.push({ jid, content, options });
        return baileys.proto.WebMessageInfo.fromObject({ key: { remoteJid: jid, fromMe: true, id: `3EB0${sock.sent.length}` } });
      },
      async sendPresenceUpdate(state, jid) { sock.presences.push({ state, jid }); },
      end() { sock.ended = true; },
    };
    sock.ev.on('creds.update', (update) => Object.assign(config.auth.creds, update)); // as Baileys' own socket does
    sockets.push(sock);
    return sock;
  }
  return { lib: { ...baileys, makeWASocket, default: makeWASocket }, sockets };
}

async function until(pred, what) {
  const deadline = Date.now() + 10000;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function waMessage(fields) {
  return baileys.proto.WebMessageInfo.fromObject({ messageTimestamp: 1764000000, pushName: 'Bob', ...fields });
}

test('the Baileys adapter: pairing, messages, sends, reconnects and logout become the bridge\'s frames', async (t) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-baileys-'));
  const daemon = fakeDaemon();
  await new Promise((resolve) => daemon.server.on('listening', resolve));
  const offline = offlineBaileys();
  const logs = [];
  const exits = [];
  const qrArt = [];
  const bridge = startBridge({
    url: daemon.url(), token: TOKEN, stateDir, adapter,
    socketOptions: { baileys: offline.lib, showQr: (art) => qrArt.push(art) }, exit: (code) => exits.push(code), log: (m) => logs.push(m),
  });
  t.after(async () => { await bridge.stop(); await daemon.close(); fs.rmSync(stateDir, { recursive: true, force: true }); });

  const hello = await daemon.type('hello');
  assert.strictEqual(hello.adapter, 'baileys');
  await until(() => offline.sockets.length === 1, 'makeWASocket');
  const sock = offline.sockets[0];
  assert.ok(sock.config.auth && sock.config.auth.creds, 'the real multi-file auth state is handed to Baileys');
  assert.strictEqual(sock.config.markOnlineOnConnect, false);

  // pairing: Baileys' QR becomes a qr frame; its new credentials are saved by the real auth state
  sock.ev.emit('connection.update', { qr: '2@REAL-SHAPED-QR' });
  assert.strictEqual((await daemon.type('qr')).qr, '2@REAL-SHAPED-QR');
  await daemon.type('state', (f) => f.state === 'qr');
  assert.ok(qrArt.length === 1 && qrArt[0].includes('▄'), 'the QR code is drawn for the terminal too');
  sock.ev.emit('creds.update', { me: ME });
  const creds = path.join(stateDir, 'auth', 'creds.json');
  await until(() => fs.existsSync(creds), 'creds.json');
  sock.user = ME;
  sock.ev.emit('connection.update', { connection: 'open' });
  const open = await daemon.type('state', (f) => f.state === 'open');
  assert.deepStrictEqual(open.me, { id: ME.id, lid: ME.lid, name: 'Andy' });
  assert.strictEqual(fs.statSync(creds).mode & 0o777, 0o600); // owner only, whatever the umask
  assert.strictEqual(JSON.parse(fs.readFileSync(creds, 'utf8')).me.id, ME.id);

  // messages.upsert with protobuf WAMessages (Long timestamps); history sync and own messages are not forwarded
  const mention = waMessage({
    key: { remoteJid: GROUP, id: '3A01', fromMe: false, participant: '4915100000001:2@s.whatsapp.net' },
    message: { extendedTextMessage: { text: '@15550001111 when?', contextInfo: { mentionedJid: ['15550001111@s.whatsapp.net'] } } },
  });
  sock.ev.emit('messages.upsert', { type: 'notify', messages: [
    mention,
    waMessage({ key: { remoteJid: GROUP, id: '3A02', fromMe: true }, message: { conversation: 'mine' } }),
  ] });
  sock.ev.emit('messages.upsert', { type: 'history', messages: [
    waMessage({ key: { remoteJid: GROUP, id: '3A03', fromMe: false, participant: 'x@s.whatsapp.net' }, message: { conversation: 'old' } }),
  ] });
  sock.ev.emit('messages.upsert', { type: 'append', messages: [
    waMessage({ key: { remoteJid: '4915100000002@s.whatsapp.net', id: '3A04', fromMe: false }, message: { imageMessage: { caption: 'look' } } }),
  ] });
  const first = await daemon.type('message', (f) => f.id === '3A01');
  assert.deepStrictEqual(
    [first.chat, first.is_group, first.sender, first.sender_name, first.text, first.time, first.mentions_bot],
    [GROUP, true, '4915100000001@s.whatsapp.net', 'Bob', '@15550001111 when?', 1764000000, true],
  );
  const dm = await daemon.type('message', (f) => f.id === '3A04');
  assert.deepStrictEqual([dm.chat, dm.text, dm.mentions_bot], ['4915100000002@s.whatsapp.net', 'look', true]);
  assert.ok(!daemon.frames.some((f) => f.type === 'message'), 'own and history messages are not forwarded');
  assert.strictEqual(bridge.buffer.size, 2); // on disk until acked

  // a send quoting the trigger goes to Baileys with the original WAMessage as the quote
  daemon.send({ type: 'send', req: '7', chat: GROUP, text: 'At 3pm.', quoted_id: '3A01' });
  const sent = await daemon.type('sent', (f) => f.req === '7');
  assert.strictEqual(sent.id, '3EB01');
  assert.strictEqual(sock.sent[0].jid, GROUP);
  assert.deepStrictEqual(sock.sent[0].content, { text: 'At 3pm.' });
  assert.strictEqual(sock.sent[0].options.quoted.key.id, '3A01');
  sock.failNext = Object.assign(new Error('not-authorized'), { retryable: false });
  daemon.send({ type: 'send', req: '8', chat: GROUP, text: 'no' });
  assert.deepStrictEqual(await daemon.type('send_error', (f) => f.req === '8'),
    { type: 'send_error', req: '8', error: 'not-authorized', retryable: false });
  daemon.send({ type: 'presence', chat: GROUP, state: 'composing' });
  await until(() => sock.presences.length === 1, 'presence');
  assert.deepStrictEqual(sock.presences[0], { state: 'composing', jid: GROUP });

  // acks empty the buffer
  daemon.send({ type: 'ack', id: '3A01' });
  daemon.send({ type: 'ack', id: '3A04' });
  await until(() => bridge.buffer.size === 0, 'acks');

  // "restart required" (after pairing): closed, then a new Baileys socket at once
  const restart = Object.assign(new Error('Stream Errored (restart required)'), { output: { statusCode: baileys.DisconnectReason.restartRequired } });
  sock.ev.emit('connection.update', { connection: 'close', lastDisconnect: { error: restart } });
  const closed = await daemon.type('state', (f) => f.state === 'closed');
  assert.match(closed.reason, /restart required.*code 515/);
  await until(() => offline.sockets.length === 2, 'a reconnect');
  const again = offline.sockets[1];
  again.user = ME;
  again.ev.emit('connection.update', { connection: 'open' });
  await daemon.type('state', (f) => f.state === 'open');

  // logged out from the phone: logged_out, and no reconnect (pairing again needs a human)
  const loggedOut = Object.assign(new Error('Connection Failure'), { output: { statusCode: baileys.DisconnectReason.loggedOut } });
  again.ev.emit('connection.update', { connection: 'close', lastDisconnect: { error: loggedOut } });
  const out = await daemon.type('state', (f) => f.state === 'logged_out');
  assert.match(out.reason, /logged this device out/);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.strictEqual(offline.sockets.length, 2);
  assert.deepStrictEqual(exits, []);
});

test('a message the daemon could not store (close 4000) stays on disk and is offered again', async (t) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-baileys-'));
  const daemon = fakeDaemon();
  await new Promise((resolve) => daemon.server.on('listening', resolve));
  const offline = offlineBaileys();
  const logs = [];
  const bridge = startBridge({ url: daemon.url(), token: TOKEN, stateDir, adapter, socketOptions: { baileys: offline.lib, showQr: () => {} },
    exit: () => {}, log: (m) => logs.push(m) });
  t.after(async () => { await bridge.stop(); await daemon.close(); fs.rmSync(stateDir, { recursive: true, force: true }); });
  await daemon.type('hello');
  await until(() => offline.sockets.length === 1, 'makeWASocket');
  const sock = offline.sockets[0];
  sock.user = ME;
  sock.ev.emit('connection.update', { connection: 'open' });
  sock.ev.emit('messages.upsert', { type: 'notify', messages: [
    waMessage({ key: { remoteJid: '4915100000002@s.whatsapp.net', id: '3B01', fromMe: false }, message: { conversation: 'keep' } }),
  ] });
  await daemon.type('message', (f) => f.id === '3B01');
  daemon.connections[0].close(STORE_FAILED, 'could not store message 3B01');
  const hello = await daemon.type('hello');
  assert.strictEqual(hello.pending, 1);
  await daemon.type('message', (f) => f.id === '3B01'); // offered again on the new connection
  assert.ok(logs.some((m) => m.includes('could not store a message')), logs.join('\n'));
  daemon.send({ type: 'ack', id: '3B01' });
  await until(() => bridge.buffer.size === 0, 'the ack');
});

test('media: Baileys downloads a photo into the media folder before the frame goes out; send_file sends image and document messages', async (t) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-baileys-'));
  const daemon = fakeDaemon();
  await new Promise((resolve) => daemon.server.on('listening', resolve));
  const offline = offlineBaileys();
  // WhatsApp's media CDN, offline: the encrypted file a phone uploaded, served to axios
  const cdn = new Map();
  const adapterFn = async (config) => {
    if (!cdn.has(config.url)) throw Object.assign(new Error('Request failed with status code 404'), { response: { status: 404 } });
    return { data: require('stream').Readable.from([cdn.get(config.url)]), status: 200, statusText: 'OK', headers: {}, config, request: {} };
  };
  const mediaDir = path.join(stateDir, 'media-for-daemon');
  const bridge = startBridge({ url: daemon.url(), token: TOKEN, stateDir, adapter, media: { dir: mediaDir, maxBytes: 4096 },
    socketOptions: { baileys: offline.lib, showQr: () => {}, downloadOptions: { options: { adapter: adapterFn } } }, exit: () => {}, log: () => {} });
  t.after(async () => { await bridge.stop(); await daemon.close(); fs.rmSync(stateDir, { recursive: true, force: true }); });
  await daemon.type('hello');
  await until(() => offline.sockets.length === 1, 'makeWASocket');
  const sock = offline.sockets[0];
  sock.user = ME;
  sock.ev.emit('connection.update', { connection: 'open' });

  const plain = require('crypto').randomBytes(3000);
  const src = path.join(stateDir, 'photo.jpg');
  fs.writeFileSync(src, plain);
  const enc = await baileys.encryptedStream({ url: src }, 'image');
  // encryptedStream returns before its write stream has even opened the file: wait until it exists and is whole
  const sizeOf = (file) => (fs.existsSync(file) ? fs.statSync(file).size : -1);
  await until(() => sizeOf(enc.encFilePath) === (Math.floor(plain.length / 16) + 1) * 16 + 10, 'the encrypted file');
  const url = 'https://mmg.whatsapp.net/v/t62.7118-24/photo.enc';
  cdn.set(url, fs.readFileSync(enc.encFilePath));
  const image = { url, directPath: '/v/t62.7118-24/photo.enc', mediaKey: enc.mediaKey, fileLength: plain.length, mimetype: 'image/jpeg', caption: 'look' };
  sock.ev.emit('messages.upsert', { type: 'notify', messages: [
    waMessage({ key: { remoteJid: '4915100000002@s.whatsapp.net', id: '3C01', fromMe: false }, message: { imageMessage: image } }),
    waMessage({ key: { remoteJid: '4915100000002@s.whatsapp.net', id: '3C02', fromMe: false }, message: { audioMessage: { ...image, ptt: true, fileLength: 99999, mimetype: 'audio/ogg' } } }),
    waMessage({ key: { remoteJid: '4915100000002@s.whatsapp.net', id: '3C03', fromMe: false }, message: { conversation: 'after the photo' } }),
  ] });
  await daemon.type('message', (f) => f.id === '3C03');
  assert.deepStrictEqual(daemon.frames.filter((f) => f.type === 'message').map((f) => f.id), ['3C01', '3C02'],
    'the text waited behind the photo\'s download, though it needed none');
  const photo = await daemon.type('message', (f) => f.id === '3C01');
  assert.deepStrictEqual([photo.text, photo.media.kind, photo.media.caption, photo.media.mimetype, photo.media.fileLength],
    ['look', 'image', 'look', 'image/jpeg', 3000]);
  assert.ok(fs.readFileSync(photo.media.path).equals(plain), 'the decrypted bytes');
  assert.strictEqual(path.dirname(photo.media.path), mediaDir);
  assert.strictEqual(fs.statSync(photo.media.path).mode & 0o777, 0o600);
  assert.strictEqual(fs.statSync(mediaDir).mode & 0o777, 0o700);
  const voice = await daemon.type('message', (f) => f.id === '3C02');
  assert.deepStrictEqual([voice.media.kind, voice.media.path, voice.media.too_large], ['voice', null, true]); // declared over 4096: not fetched
  daemon.send({ type: 'ack', id: '3C01' });
  await until(() => !fs.existsSync(photo.media.path), 'the download removed on ack');

  daemon.send({ type: 'send_file', req: '9', chat: GROUP, path: src, name: 'photo.jpg', mime: 'image/jpeg', kind: 'image', caption: 'back', quoted_id: '3C01' });
  assert.deepStrictEqual(await daemon.type('sent', (f) => f.req === '9'), { type: 'sent', req: '9', id: '3EB01', kind: 'image' });
  assert.deepStrictEqual(sock.sent[0].content, { image: { url: src }, caption: 'back', mimetype: 'image/jpeg' });
  assert.strictEqual(sock.sent[0].options.quoted.key.id, '3C01');
  daemon.send({ type: 'send_file', req: '10', chat: GROUP, path: src, name: 'r.pdf', mime: 'application/pdf', kind: 'document', caption: '' });
  await daemon.type('sent', (f) => f.req === '10');
  assert.deepStrictEqual(sock.sent[1].content, { document: { url: src }, mimetype: 'application/pdf', fileName: 'r.pdf', caption: undefined });
  daemon.send({ type: 'send_file', req: '11', chat: GROUP, path: path.join(stateDir, 'gone'), name: 'x', mime: 'text/plain', kind: 'document' });
  const failed = await daemon.type('send_error', (f) => f.req === '11');
  assert.strictEqual(failed.retryable, false);
});
