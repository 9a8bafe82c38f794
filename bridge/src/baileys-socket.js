'use strict';
// The only file that touches Baileys. Same small interface as test/fake-socket.js:
//   const sock = createSocket({ authDir, log, onState, onQr, onMessages })
//   await sock.start(); await sock.send(jid, text, quoted) -> WhatsApp message id
//   await sock.sendMedia(jid, content, quoted) -> id (content: sendMessage's {image|document: {url}, ...})
//   await sock.download(raw, {signal}) -> a readable stream of the message's decrypted file
//   await sock.presence(jid, 'composing' | 'paused' | 'available'); sock.me(); await sock.stop()
// onState(state, info) with state in connecting | qr | open | closed | logged_out.
// `baileys` (optional) stands in for require('baileys'): test/baileys-adapter.test.js passes the
// real module with only makeWASocket replaced (no network), to check this file's mapping of
// Baileys' events (connection.update, messages.upsert, creds.update) to the bridge's frames.

const path = require('path');

// `downloadOptions` (tests) are handed to downloadMediaMessage: {options: axios request options}.
function createSocket({ authDir, log, onState, onQr, onMessages, baileys = require('baileys'),
  showQr = (art) => process.stderr.write(art + '\n'), downloadOptions = {} }) {
  const makeWASocket = baileys.makeWASocket || baileys.default;
  const { useMultiFileAuthState, DisconnectReason, Browsers } = baileys;
  const pino = require('pino');
  const qrcode = require('qrcode-terminal');
  const logger = pino({ level: process.env.NGB_WA_BAILEYS_LOG || 'warn' }, pino.destination(2));

  let sock = null;
  let stopped = false;
  let attempt = 0;
  let timer = null;

  async function connect() {
    if (stopped) return;
    onState('connecting');
    const { state, saveCreds } = await useMultiFileAuthState(authDir);
    sock = makeWASocket({
      auth: state,
      logger,
      browser: Browsers.ubuntu('NanoGridBot'),
      markOnlineOnConnect: false,
      syncFullHistory: false,
    });
    sock.ev.on('creds.update', saveCreds);
    sock.ev.on('connection.update', (update) => {
      if (update.qr) {
        log(`scan this QR code with WhatsApp (Settings > Linked devices > Link a device):`);
        qrcode.generate(update.qr, { small: true }, showQr);
        onQr(update.qr);
      }
      if (update.connection === 'open') {
        attempt = 0;
        onState('open', { me: me() });
      } else if (update.connection === 'close') {
        const code = update.lastDisconnect && update.lastDisconnect.error && update.lastDisconnect.error.output
          ? update.lastDisconnect.error.output.statusCode : undefined;
        const reason = update.lastDisconnect && update.lastDisconnect.error ? String(update.lastDisconnect.error.message || '') : '';
        if (code === DisconnectReason.loggedOut) {
          onState('logged_out', { reason: `WhatsApp logged this device out (${reason}); delete ${authDir} and restart to pair again` });
          return; // pairing again needs a human
        }
        onState('closed', { reason: `${reason || 'connection closed'} (code ${code})` });
        const delay = code === DisconnectReason.restartRequired ? 0 : Math.min(60000, 1000 * 2 ** Math.min(attempt++, 6));
        timer = setTimeout(() => connect().catch((err) => log(`reconnect failed: ${err.message}`)), delay);
      }
    });
    sock.ev.on('messages.upsert', ({ messages, type }) => {
      if (type !== 'notify' && type !== 'append') return;
      onMessages(messages);
    });
  }

  function me() {
    if (!sock || !sock.user) return null;
    return { id: sock.user.id, lid: sock.user.lid || null, name: sock.user.name || null };
  }

  return {
    start: connect,
    me,
    async send(jid, text, quoted) {
      if (!sock) throw Object.assign(new Error('not connected'), { retryable: true });
      const sent = await sock.sendMessage(jid, { text }, quoted ? { quoted } : undefined);
      return sent && sent.key ? sent.key.id : null;
    },
    async sendMedia(jid, content, quoted) {
      if (!sock) throw Object.assign(new Error('not connected'), { retryable: true });
      const sent = await sock.sendMessage(jid, content, quoted ? { quoted } : undefined);
      return sent && sent.key ? sent.key.id : null;
    },
    async download(raw, { signal } = {}) {
      if (!sock) throw new Error('not connected');
      // a stream, decrypted as it comes; an expired media URL is asked for again (reuploadRequest)
      const options = { ...downloadOptions, options: { ...(downloadOptions.options || {}), signal } };
      return baileys.downloadMediaMessage(raw, 'stream', options, { logger, reuploadRequest: sock.updateMediaMessage });
    },
    async presence(jid, state) {
      if (sock) await sock.sendPresenceUpdate(state, jid);
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (sock) { try { sock.end(undefined); } catch (err) { /* closing anyway */ } }
    },
  };
}

module.exports = { createSocket, name: 'baileys', authFiles: (authDir) => path.join(authDir, 'creds.json') };
