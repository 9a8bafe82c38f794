'use strict';
// A stand-in for Baileys (NGB_WA_FAKE=1), for tests and demos. Same interface as baileys-socket.js.
// Driven through a folder (NGB_WA_FAKE_DIR, default <state>/fake):
//   inbox/*.json    Baileys-shaped WAMessages ({key, message, pushName, messageTimestamp}) or
//                   {"op": "logout"} / {"op": "close"}; each file is consumed in name order
//   sent.jsonl      one line per sent message: {id, jid, text, quoted_id, quoted_participant}
//   presence.jsonl  one line per presence update
// It writes a creds.json into the auth folder like Baileys does, emits a qr, then `open` (or
// `open` at once when creds exist, i.e. "already paired").

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

function createSocket({ authDir, log, onState, onQr, onMessages }) {
  const dir = process.env.NGB_WA_FAKE_DIR || path.join(authDir, '..', 'fake');
  const inbox = path.join(dir, 'inbox');
  fs.mkdirSync(inbox, { recursive: true });
  const me = { id: process.env.NGB_WA_FAKE_ME || '15550001111:7@s.whatsapp.net', lid: null, name: 'Andy' };
  let timer = null;
  let state = 'closed';

  function setState(s, info) { state = s; onState(s, info); }

  function poll() {
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
        else messages.push(one);
      }
      if (messages.length) onMessages(messages); // buffered (fsync'd) before this returns
      fs.rmSync(file);
    }
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
      if (state !== 'open') throw Object.assign(new Error(`fake: not connected (${state})`), { retryable: true });
      if (text.includes('FAKE-FAIL-PERMANENT')) throw Object.assign(new Error('fake: refused'), { retryable: false });
      const id = '3EB0' + crypto.randomBytes(8).toString('hex').toUpperCase();
      const line = { id, jid, text, quoted_id: quoted ? quoted.key.id : null, quoted_participant: quoted ? quoted.key.participant || null : null };
      fs.appendFileSync(path.join(dir, 'sent.jsonl'), JSON.stringify(line) + '\n');
      return id;
    },
    async presence(jid, s) { fs.appendFileSync(path.join(dir, 'presence.jsonl'), JSON.stringify({ jid, state: s }) + '\n'); },
    async stop() { if (timer) clearInterval(timer); },
  };
}

module.exports = { createSocket, name: 'fake' };
