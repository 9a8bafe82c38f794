'use strict';
// Baileys WAMessage -> the protocol's `message` frame fields (PROTOCOL.md). Pure functions, shared by
// the real adapter and the fake one, so the fake exercises this code too.

const { mediaOf } = require('./media');

const MEDIA_PLACEHOLDERS = [
  ['imageMessage', '[photo]'], ['videoMessage', '[video]'], ['audioMessage', '[audio]'],
  ['documentMessage', '[file]'], ['stickerMessage', '[sticker]'], ['locationMessage', '[location]'],
  ['contactMessage', '[contact]'], ['pollCreationMessage', '[poll]'],
];

/** "4915112345678:12@s.whatsapp.net" -> "4915112345678@s.whatsapp.net" (drop the device part). */
function bareJid(jid) {
  if (!jid || typeof jid !== 'string') return '';
  const [user, server] = jid.split('@');
  return `${user.split(':')[0]}@${server || ''}`;
}

/** Unwrap ephemeral / view-once / edited containers down to the real content. */
function unwrap(message) {
  let m = message || {};
  for (let i = 0; i < 5; i++) {
    const inner = m.ephemeralMessage || m.viewOnceMessage || m.viewOnceMessageV2 || m.documentWithCaptionMessage;
    if (!inner || !inner.message) break;
    m = inner.message;
  }
  return m;
}

function textOf(m) {
  if (typeof m.conversation === 'string' && m.conversation) return m.conversation;
  if (m.extendedTextMessage && m.extendedTextMessage.text) return m.extendedTextMessage.text;
  for (const key of ['imageMessage', 'videoMessage', 'documentMessage']) {
    if (m[key] && m[key].caption) return m[key].caption;
  }
  for (const [key, label] of MEDIA_PLACEHOLDERS) if (m[key]) return label;
  return '';
}

function contextOf(m) {
  for (const value of Object.values(m)) {
    if (value && typeof value === 'object' && value.contextInfo) return value.contextInfo;
  }
  return {};
}

/**
 * @param raw   a Baileys WAMessage ({key, message, pushName, messageTimestamp})
 * @param me    the bot's own ids: {id, lid} (either may be missing before pairing)
 * @returns the frame fields, or null for what is not a user's message (own messages, status
 *          broadcasts, protocol/reaction messages, empty service messages)
 */
function normalize(raw, me) {
  if (!raw || !raw.key || !raw.message) return null;
  const { key } = raw;
  const chat = key.remoteJid || '';
  if (key.fromMe || !chat || chat === 'status@broadcast' || chat.endsWith('@broadcast') || chat.endsWith('@newsletter')) return null;
  const m = unwrap(raw.message);
  if (m.protocolMessage || m.reactionMessage || m.senderKeyDistributionMessage && Object.keys(m).length === 1) return null;
  const text = textOf(m);
  if (!text) return null;
  const isGroup = chat.endsWith('@g.us');
  const sender = bareJid(isGroup ? (key.participant || raw.participant || '') : chat);
  const ctx = contextOf(m);
  const media = mediaOf(m);
  const mentions = Array.isArray(ctx.mentionedJid) ? ctx.mentionedJid.map(bareJid) : [];
  const mine = new Set([bareJid(me && me.id), bareJid(me && me.lid)].filter((j) => j && j !== '@'));
  const quotedSender = ctx.participant ? bareJid(ctx.participant) : null;
  const mentionsBot = !isGroup || mentions.some((j) => mine.has(j)) || (quotedSender !== null && mine.has(quotedSender));
  let ts = raw.messageTimestamp;
  if (ts && typeof ts === 'object' && typeof ts.toNumber === 'function') ts = ts.toNumber();
  ts = Number(ts) || Math.floor(Date.now() / 1000);
  return {
    id: key.id,
    chat,
    is_group: isGroup,
    sender,
    sender_name: raw.pushName || sender.split('@')[0],
    text,
    time: ts,
    mentions,
    mentions_bot: mentionsBot,
    quoted_id: ctx.stanzaId || null,
    quoted_sender: quotedSender,
    // the file it carries (PROTOCOL.md "Media"): the bridge downloads it before the frame goes out
    ...(media ? { media } : {}),
  };
}

module.exports = { normalize, bareJid, unwrap, textOf };
