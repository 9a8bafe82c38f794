'use strict';
// node --test bridge/test/  (the daemon-side protocol is tested for real by tests/test_channel_whatsapp.py)
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { normalize, bareJid } = require('../src/normalize');
const { InboundBuffer } = require('../src/buffer');

const ME = { id: '15550001111:7@s.whatsapp.net', lid: '99887766@lid' };

test('bareJid drops the device part', () => {
  assert.strictEqual(bareJid('15550001111:7@s.whatsapp.net'), '15550001111@s.whatsapp.net');
  assert.strictEqual(bareJid(''), '');
});

test('group message with a mention of the bot, quoting', () => {
  const f = normalize({
    key: { remoteJid: '1203@g.us', id: 'ABC', fromMe: false, participant: '49151:3@s.whatsapp.net' },
    pushName: 'Bob', messageTimestamp: 1764000000,
    message: { extendedTextMessage: { text: '@15550001111 hi', contextInfo: { mentionedJid: ['15550001111@s.whatsapp.net'], stanzaId: 'Q1', participant: '4917@s.whatsapp.net' } } },
  }, ME);
  assert.deepStrictEqual(
    [f.id, f.chat, f.sender, f.sender_name, f.text, f.mentions_bot, f.quoted_id, f.quoted_sender, f.is_group, f.time],
    ['ABC', '1203@g.us', '49151@s.whatsapp.net', 'Bob', '@15550001111 hi', true, 'Q1', '4917@s.whatsapp.net', true, 1764000000],
  );
});

test('a mention by LID and a reply to the bot trigger; a plain group message does not', () => {
  const base = { key: { remoteJid: 'g@g.us', id: 'X', participant: 'a@s.whatsapp.net' } };
  assert.ok(normalize({ ...base, message: { extendedTextMessage: { text: 'yo', contextInfo: { mentionedJid: ['99887766@lid'] } } } }, ME).mentions_bot);
  assert.ok(normalize({ ...base, message: { extendedTextMessage: { text: 'yo', contextInfo: { stanzaId: 'B', participant: '15550001111@s.whatsapp.net' } } } }, ME).mentions_bot);
  assert.strictEqual(normalize({ ...base, message: { conversation: 'yo' } }, ME).mentions_bot, false);
});

test('private chats always address the bot; captions and media placeholders; ephemeral unwrapped', () => {
  const dm = normalize({ key: { remoteJid: '4915@s.whatsapp.net', id: 'D' }, message: { ephemeralMessage: { message: { conversation: 'hey' } } } }, ME);
  assert.strictEqual(dm.mentions_bot, true);
  assert.strictEqual(dm.text, 'hey');
  assert.strictEqual(dm.sender, '4915@s.whatsapp.net');
  assert.strictEqual(normalize({ key: { remoteJid: 'p@s.whatsapp.net', id: 'I' }, message: { imageMessage: { caption: 'look' } } }, ME).text, 'look');
  assert.strictEqual(normalize({ key: { remoteJid: 'p@s.whatsapp.net', id: 'S' }, message: { stickerMessage: {} } }, ME).text, '[sticker]');
});

test('own messages, status broadcasts, reactions and protocol messages are skipped', () => {
  assert.strictEqual(normalize({ key: { remoteJid: 'p@s.whatsapp.net', id: '1', fromMe: true }, message: { conversation: 'x' } }, ME), null);
  assert.strictEqual(normalize({ key: { remoteJid: 'status@broadcast', id: '2' }, message: { conversation: 'x' } }, ME), null);
  assert.strictEqual(normalize({ key: { remoteJid: 'p@s.whatsapp.net', id: '3' }, message: { reactionMessage: { text: '👍' } } }, ME), null);
  assert.strictEqual(normalize({ key: { remoteJid: 'p@s.whatsapp.net', id: '4' }, message: { protocolMessage: {} } }, ME), null);
});

test('the buffer survives a restart, keeps order, ignores repeats, forgets acked, files 0600', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-buf-'));
  const old = process.umask(0o022);
  try {
    const a = new InboundBuffer(dir);
    assert.ok(a.put({ id: 'm1', text: 'one' }, { raw: 1 }));
    assert.ok(a.put({ id: 'm2', text: 'two' }, null));
    assert.strictEqual(a.put({ id: 'm1', text: 'one' }, null), null);
    fs.writeFileSync(path.join(dir, 'torn.json.tmp'), '{"half');
    const b = new InboundBuffer(dir);
    assert.deepStrictEqual(b.pending().map((e) => [e.frame.id, e.frame.seq]), [['m1', 1], ['m2', 2]]);
    assert.ok(!fs.existsSync(path.join(dir, 'torn.json.tmp')));
    for (const name of fs.readdirSync(dir)) assert.strictEqual(fs.statSync(path.join(dir, name)).mode & 0o777, 0o600);
    assert.ok(b.ack('m1'));
    assert.ok(!b.ack('m1'));
    assert.ok(b.put({ id: 'm3', text: 'three' }, null).seq === 3);
    assert.deepStrictEqual(new InboundBuffer(dir).pending().map((e) => e.frame.id), ['m2', 'm3']);
  } finally {
    process.umask(old);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('media: the frame names the file a message carries; a voice note is `voice`; stickers stay placeholders', () => {
  const dm = (message) => normalize({ key: { remoteJid: 'p@s.whatsapp.net', id: 'M' }, message }, ME);
  const voice = dm({ audioMessage: { mimetype: 'audio/ogg; codecs=opus', ptt: true, fileLength: { toNumber: () => 4242 } } });
  assert.deepStrictEqual([voice.text, voice.media.kind, voice.media.fileLength, voice.media.ready], ['[audio]', 'voice', 4242, false]);
  const doc = dm({ documentWithCaptionMessage: { message: { documentMessage: { fileName: 'a.pdf', mimetype: 'application/pdf', caption: 'read', fileLength: '12' } } } });
  assert.deepStrictEqual([doc.text, doc.media.kind, doc.media.fileName, doc.media.caption, doc.media.fileLength], ['read', 'document', 'a.pdf', 'read', 12]);
  assert.strictEqual(dm({ stickerMessage: {} }).media, undefined);
  assert.strictEqual(dm({ conversation: 'hi' }).media, undefined);
});

test('media: downloads are bounded (declared size, real size, time) and the sweep removes only its own files', async () => {
  const { MediaFolder } = require('../src/media');
  const { Readable } = require('stream');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-media-'));
  try {
    const folder = new MediaFolder({ dir: path.join(dir, 'media'), maxBytes: 100, timeoutMs: 200 });
    const base = { kind: 'document', fileLength: null, caption: '', path: null, error: null, ready: false };
    let asked = 0;
    const bytes = (n) => async () => { asked++; return Readable.from([Buffer.alloc(n, 7)]); };
    const ok = await folder.fetch({ key: { id: 'a' } }, { ...base, fileLength: 50 }, bytes(50));
    assert.deepStrictEqual([ok.ready, ok.size, fs.readFileSync(ok.path).length, fs.statSync(ok.path).mode & 0o777], [true, 50, 50, 0o600]);
    const declared = await folder.fetch({ key: { id: 'b' } }, { ...base, fileLength: 101 }, bytes(10));
    assert.deepStrictEqual([declared.path, declared.too_large, asked], [null, true, 1]); // never asked for
    const cut = await folder.fetch({ key: { id: 'c' } }, { ...base, fileLength: 10 }, bytes(101));
    assert.deepStrictEqual([cut.path, cut.too_large], [null, true]);
    const slow = await folder.fetch({ key: { id: 'd' } }, base, () => new Promise(() => {}));
    assert.match(slow.error, /timed out after 200 ms/);
    const broken = await folder.fetch({ key: { id: 'e' } }, base, async () => { throw new Error('HTTP 410'); });
    assert.deepStrictEqual([broken.path, broken.error], [null, 'HTTP 410']);
    fs.writeFileSync(path.join(dir, 'media', 'not-ours.txt'), 'x');
    const other = await folder.fetch({ key: { id: 'f' } }, base, bytes(5));
    folder.sweep([ok.path]);
    assert.deepStrictEqual(fs.readdirSync(path.join(dir, 'media')).sort(), [path.basename(ok.path), 'not-ours.txt'].sort());
    assert.ok(!fs.existsSync(other.path));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
